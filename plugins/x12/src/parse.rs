//! X12 interchanges: separators from the ISA segment, the ISA/GS/ST envelopes,
//! and their control counts. Errors name the segment number (counted from ISA
//! = 1) and what is wrong.

/// One segment: its id and its elements (element 1 is `elements[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Position in the interchange, ISA = 1.
    pub number: usize,
    /// Segment id, e.g. `PO1`.
    pub id: String,
    elements: Vec<String>,
}

impl Segment {
    /// Element `n` (1-based); empty when absent.
    pub fn el(&self, n: usize) -> &str {
        n.checked_sub(1)
            .and_then(|i| self.elements.get(i))
            .map_or("", String::as_str)
    }

    /// How many elements the segment carries.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Whether it carries none.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// A "where" for error messages: `segment 7 (PO1)`.
    pub fn at(&self) -> String {
        format!("segment {} ({})", self.number, self.id)
    }
}

/// A transaction set (ST..SE), without its ST and SE.
#[derive(Debug, Clone)]
pub struct TransactionSet {
    /// ST01, e.g. `850`.
    pub id: String,
    /// ST02.
    pub control: String,
    /// GS08 of its group, e.g. `004010` or `005010`.
    pub version: String,
    /// Segment number of its ST.
    pub starts_at: usize,
    /// The body segments.
    pub segments: Vec<Segment>,
}

/// A parsed interchange.
#[derive(Debug, Clone)]
pub struct Interchange {
    /// ISA06, trimmed.
    pub sender: String,
    /// ISA08, trimmed.
    pub receiver: String,
    /// ISA13.
    pub control: String,
    /// ISA16.
    pub component_separator: char,
    /// Every transaction set of every group, in order, with its group's control number.
    pub sets: Vec<(String, TransactionSet)>,
}

/// Parse one interchange.
pub fn parse(input: &[u8]) -> Result<Interchange, String> {
    let text = std::str::from_utf8(input)
        .map_err(|e| format!("not text: invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let text = text.trim_start_matches(['\u{feff}', ' ', '\r', '\n', '\t']);
    if !text.starts_with("ISA") || text.len() < 106 {
        return Err("not an X12 interchange: it does not start with a complete ISA segment".into());
    }
    let element = text[3..].chars().next().ok_or("truncated ISA segment")?;
    // ISA has 16 elements; ISA16 (one character) follows the 16th separator,
    // and the segment terminator follows it.
    let mut seps = text
        .char_indices()
        .filter(|(_, c)| *c == element)
        .map(|(i, _)| i);
    let sixteenth = seps
        .nth(15)
        .ok_or("truncated ISA segment: fewer than 16 elements")?;
    let mut after = text[sixteenth + 1..].chars();
    let component = after.next().ok_or("truncated ISA segment: no ISA16")?;
    let terminator = after
        .next()
        .ok_or("truncated ISA segment: no segment terminator after ISA16")?;
    if terminator.is_alphanumeric() || terminator == element || component == element {
        return Err(format!(
            "ISA separators are ambiguous: element {element:?}, component {component:?}, segment {terminator:?}"
        ));
    }

    let segments: Vec<Segment> = text
        .split(terminator)
        .map(|s| s.trim_matches(['\r', '\n', ' ', '\t']))
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| {
            let mut parts = s.split(element);
            let id = parts.next().unwrap_or_default().to_owned();
            Segment {
                number: i + 1,
                id,
                elements: parts.map(str::to_owned).collect(),
            }
        })
        .collect();

    let isa = &segments[0];
    let mut interchange = Interchange {
        sender: isa.el(6).trim().to_owned(),
        receiver: isa.el(8).trim().to_owned(),
        control: isa.el(13).trim().to_owned(),
        component_separator: component,
        sets: Vec::new(),
    };
    let mut groups = 0usize;
    let mut group: Option<(Segment, usize)> = None;
    let mut set: Option<(Segment, Vec<Segment>)> = None;
    let mut ended = false;
    for seg in segments.into_iter().skip(1) {
        if ended {
            return Err(format!("{}: data after IEA", seg.at()));
        }
        match seg.id.as_str() {
            "GS" => {
                if let Some((gs, _)) = &group {
                    return Err(format!(
                        "{}: GS before the GE of the group at segment {}",
                        seg.at(),
                        gs.number
                    ));
                }
                group = Some((seg, 0));
            }
            "ST" => {
                if group.is_none() {
                    return Err(format!("{}: ST outside a GS group", seg.at()));
                }
                if let Some((st, _)) = &set {
                    return Err(format!(
                        "{}: ST before the SE of transaction set {} at segment {}",
                        seg.at(),
                        st.el(1),
                        st.number
                    ));
                }
                set = Some((seg, Vec::new()));
            }
            "SE" => {
                let Some((st, body)) = set.take() else {
                    return Err(format!("{}: SE without ST", seg.at()));
                };
                let counted = body.len() + 2;
                if seg.el(1).trim().parse::<usize>().ok() != Some(counted) {
                    return Err(format!(
                        "{}: SE01 says {} segments, but transaction set {} (ST02 {}) has {counted}",
                        seg.at(),
                        seg.el(1),
                        st.el(1),
                        st.el(2)
                    ));
                }
                if seg.el(2) != st.el(2) {
                    return Err(format!(
                        "{}: SE02 {} does not match ST02 {}",
                        seg.at(),
                        seg.el(2),
                        st.el(2)
                    ));
                }
                let Some((gs, count)) = group.as_mut() else {
                    return Err(format!("{}: SE outside a group", seg.at()));
                };
                *count += 1;
                let version = gs.el(8).to_owned();
                interchange.sets.push((
                    gs.el(6).to_owned(),
                    TransactionSet {
                        id: st.el(1).to_owned(),
                        control: st.el(2).to_owned(),
                        version,
                        starts_at: st.number,
                        segments: body,
                    },
                ));
            }
            "GE" => {
                if let Some((st, _)) = &set {
                    return Err(format!(
                        "{}: GE before the SE of transaction set {} at segment {}",
                        seg.at(),
                        st.el(1),
                        st.number
                    ));
                }
                let Some((gs, count)) = group.take() else {
                    return Err(format!("{}: GE without GS", seg.at()));
                };
                if seg.el(1).trim().parse::<usize>().ok() != Some(count) {
                    return Err(format!(
                        "{}: GE01 says {} transaction sets, but the group has {count}",
                        seg.at(),
                        seg.el(1)
                    ));
                }
                if seg.el(2) != gs.el(6) {
                    return Err(format!(
                        "{}: GE02 {} does not match GS06 {}",
                        seg.at(),
                        seg.el(2),
                        gs.el(6)
                    ));
                }
                groups += 1;
            }
            "IEA" => {
                if group.is_some() || set.is_some() {
                    return Err(format!("{}: IEA inside an open group", seg.at()));
                }
                if seg.el(1).trim().parse::<usize>().ok() != Some(groups) {
                    return Err(format!(
                        "{}: IEA01 says {} groups, but the interchange has {groups}",
                        seg.at(),
                        seg.el(1)
                    ));
                }
                if seg.el(2).trim() != interchange.control {
                    return Err(format!(
                        "{}: IEA02 {} does not match ISA13 {}",
                        seg.at(),
                        seg.el(2),
                        interchange.control
                    ));
                }
                ended = true;
            }
            _ => match set.as_mut() {
                Some((_, body)) => body.push(seg),
                None => return Err(format!("{}: segment outside a transaction set", seg.at())),
            },
        }
    }
    if let Some((st, _)) = set {
        return Err(format!(
            "truncated: transaction set {} (ST02 {}) at segment {} has no SE",
            st.el(1),
            st.el(2),
            st.number
        ));
    }
    if let Some((gs, _)) = group {
        return Err(format!(
            "truncated: the group at segment {} has no GE",
            gs.number
        ));
    }
    if !ended {
        return Err("truncated: no IEA segment".into());
    }
    Ok(interchange)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn isa(control: &str) -> String {
        format!(
            "ISA*00*          *00*          *ZZ*HOSPITAL       *ZZ*SUPPLIER       *260522*0830*U*00401*{control}*0*P*>~"
        )
    }

    #[test]
    fn separators_come_from_isa() {
        let text = isa("000000001").replace('*', "|").replace('~', "\n")
            + "GS|PO|H|S|20260522|0830|7|X|004010\nST|850|0001\nBEG|00|SA|PO-1||20260522\nSE|3|0001\nGE|1|7\nIEA|1|000000001\n";
        let parsed = parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.component_separator, '>');
        assert_eq!(parsed.sender, "HOSPITAL");
        assert_eq!(parsed.sets.len(), 1);
        assert_eq!(parsed.sets[0].1.segments[0].el(3), "PO-1");
    }

    #[test]
    fn control_counts_are_checked() {
        let good = isa("000000001")
            + "GS*PO*H*S*20260522*0830*7*X*004010~ST*850*0001~BEG*00*SA*PO-1**20260522~SE*3*0001~GE*1*7~IEA*1*000000001~";
        assert!(parse(good.as_bytes()).is_ok());
        let err = parse(good.replace("SE*3*", "SE*4*").as_bytes()).unwrap_err();
        assert_eq!(
            err,
            "segment 5 (SE): SE01 says 4 segments, but transaction set 850 (ST02 0001) has 3"
        );
        let err = parse(good.replace("GE*1*7", "GE*2*7").as_bytes()).unwrap_err();
        assert_eq!(
            err,
            "segment 6 (GE): GE01 says 2 transaction sets, but the group has 1"
        );
        let err = parse(&good.as_bytes()[..good.len() - 33]).unwrap_err();
        assert!(err.starts_with("truncated"), "{err}");
        let err = parse(b"hello").unwrap_err();
        assert!(err.starts_with("not an X12 interchange"), "{err}");
    }
}
