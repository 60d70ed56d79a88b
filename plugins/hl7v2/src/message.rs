//! HL7 v2 messages: encoding characters from MSH, segments, fields,
//! repetitions, components and escape sequences.

/// The five encoding characters of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// Field separator (MSH-1), usually `|`.
    pub field: char,
    /// Component separator, usually `^`.
    pub component: char,
    /// Repetition separator, usually `~`.
    pub repetition: char,
    /// Escape character, usually `\`.
    pub escape: char,
    /// Subcomponent separator, usually `&`.
    pub subcomponent: char,
}

/// One segment, fields split (unescaped values are decoded on access).
#[derive(Debug, Clone)]
pub struct Segment {
    /// Segment id.
    pub id: String,
    /// 1-based position in the message.
    pub number: usize,
    fields: Vec<String>,
}

/// A parsed message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its encoding characters.
    pub encoding: Encoding,
    /// Its segments, MSH first.
    pub segments: Vec<Segment>,
}

impl Message {
    /// Parse one message; segments end in `\r`, `\n` or `\r\n`.
    pub fn parse(text: &str) -> Result<Message, String> {
        let text = text.trim_start_matches(['\u{feff}', '\r', '\n', ' ']);
        if !text.starts_with("MSH") {
            return Err("segment 1: a message starts with MSH".into());
        }
        let mut chars = text[3..].chars();
        let field = chars
            .next()
            .ok_or("segment 1: MSH has no field separator")?;
        let enc: Vec<char> = chars.take_while(|c| *c != field).collect();
        if enc.len() < 4 {
            return Err(format!(
                "segment 1 (MSH) field 2: encoding characters {:?} are incomplete",
                enc.iter().collect::<String>()
            ));
        }
        let encoding = Encoding {
            field,
            component: enc[0],
            repetition: enc[1],
            escape: enc[2],
            subcomponent: enc[3],
        };
        let segments = text
            .split(['\r', '\n'])
            .filter(|s| !s.trim().is_empty())
            .enumerate()
            .map(|(i, s)| {
                let mut parts: Vec<String> = s.split(field).map(str::to_owned).collect();
                let id = parts.remove(0);
                if id == "MSH" {
                    // MSH-1 is the separator itself: keep numbering aligned.
                    parts.insert(0, field.to_string());
                }
                Segment {
                    id,
                    number: i + 1,
                    fields: parts,
                }
            })
            .collect::<Vec<_>>();
        for s in &segments {
            if s.id.len() != 3
                || !s
                    .id
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            {
                return Err(format!(
                    "segment {}: {:?} is not a segment id",
                    s.number, s.id
                ));
            }
        }
        Ok(Message { encoding, segments })
    }

    /// The first segment called `id`.
    pub fn first(&self, id: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.id == id)
    }

    /// MSH-9 as `TYPE^TRIGGER`.
    pub fn message_type(&self) -> String {
        let msh = &self.segments[0];
        let t = self.component(msh, 9, 1);
        let trigger = self.component(msh, 9, 2);
        format!("{t}^{trigger}")
    }

    /// Field `n` (raw, first repetition).
    fn raw_field<'a>(&self, seg: &'a Segment, n: usize) -> &'a str {
        let raw = n
            .checked_sub(1)
            .and_then(|i| seg.fields.get(i))
            .map_or("", String::as_str);
        if seg.id == "MSH" && n <= 2 {
            raw
        } else {
            raw.split(self.encoding.repetition)
                .next()
                .unwrap_or_default()
        }
    }

    /// Component `c` of field `n`, unescaped.
    pub fn component(&self, seg: &Segment, n: usize, c: usize) -> String {
        let field = self.raw_field(seg, n);
        let comp = field
            .split(self.encoding.component)
            .nth(c.saturating_sub(1))
            .unwrap_or_default();
        let first_sub = comp
            .split(self.encoding.subcomponent)
            .next()
            .unwrap_or_default();
        self.unescape(first_sub)
    }

    /// Field `n`, first component, unescaped.
    pub fn value(&self, seg: &Segment, n: usize) -> String {
        self.component(seg, n, 1)
    }

    /// Every repetition of field `n`, each split into unescaped components.
    pub fn repetitions(&self, seg: &Segment, n: usize) -> Vec<Vec<String>> {
        let raw = n
            .checked_sub(1)
            .and_then(|i| seg.fields.get(i))
            .map_or("", String::as_str);
        raw.split(self.encoding.repetition)
            .filter(|r| !r.is_empty())
            .map(|r| {
                r.split(self.encoding.component)
                    .map(|c| self.unescape(c))
                    .collect()
            })
            .collect()
    }

    /// Decode `\F\ \S\ \T\ \R\ \E\ \Xhh..\ \.br\`.
    pub fn unescape(&self, text: &str) -> String {
        let e = self.encoding.escape;
        if !text.contains(e) {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(e) {
            out.push_str(&rest[..start]);
            let after = &rest[start + e.len_utf8()..];
            let Some(end) = after.find(e) else {
                out.push_str(&rest[start..]);
                return out;
            };
            let code = &after[..end];
            match code {
                "F" => out.push(self.encoding.field),
                "S" => out.push(self.encoding.component),
                "T" => out.push(self.encoding.subcomponent),
                "R" => out.push(self.encoding.repetition),
                "E" => out.push(e),
                ".br" => out.push('\n'),
                hex if hex.starts_with('X') && hex.len() % 2 == 1 => {
                    let bytes: Option<Vec<u8>> = (1..hex.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
                        .collect();
                    match bytes.and_then(|b| String::from_utf8(b).ok()) {
                        Some(s) => out.push_str(&s),
                        None => out.push_str(&rest[start..start + e.len_utf8() * 2 + code.len()]),
                    }
                }
                // Unknown escapes (formatting like \H\ \N\) are dropped.
                _ => {}
            }
            rest = &after[end + e.len_utf8()..];
        }
        out.push_str(rest);
        out
    }
}

impl Segment {
    /// A "where" for errors: `segment 4 (RQD)`.
    pub fn at(&self) -> String {
        format!("segment {} ({})", self.number, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_escapes_repetitions_and_components() {
        let m = Message::parse(
            "MSH#!@$%#A#B\rZZZ#one!two@three!four#x$F$y$S$z$T$w$R$v$E$u$X48C3A9$$.br$end",
        )
        .unwrap();
        assert_eq!(
            m.encoding,
            Encoding {
                field: '#',
                component: '!',
                repetition: '@',
                escape: '$',
                subcomponent: '%'
            }
        );
        let z = &m.segments[1];
        assert_eq!(
            m.repetitions(z, 1),
            vec![
                vec!["one".to_string(), "two".to_string()],
                vec!["three".to_string(), "four".to_string()]
            ]
        );
        assert_eq!(m.value(z, 2), "x#y!z%w@v$uHé\nend");
        assert_eq!(m.value(&m.segments[0], 3), "A");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(
            Message::parse("PID|1")
                .unwrap_err()
                .contains("starts with MSH")
        );
        assert!(Message::parse("MSH|^~").unwrap_err().contains("incomplete"));
        assert!(
            Message::parse("MSH|^~\\&|A\rnot a segment")
                .unwrap_err()
                .contains("is not a segment id")
        );
    }
}
