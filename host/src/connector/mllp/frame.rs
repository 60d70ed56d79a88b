//! MLLP framing (`<VT> message <FS><CR>`) and the HL7 ACKs sent back.
//!
//! Bytes outside a frame are skipped, a frame over [`MAX_FRAME`] is refused
//! and discarded, and a start block inside a frame restarts it.

const VT: u8 = 0x0b;
const FS: u8 = 0x1c;
const CR: u8 = 0x0d;

/// Buffer capacity a connection keeps between messages.
const KEPT: usize = 64 << 10;

/// The largest message taken, framing excluded.
pub const MAX_FRAME: usize = 1 << 20;

/// What the framer found in the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame {
    /// A complete message.
    Message(Vec<u8>),
    /// A message over the size limit, now discarded; its start is kept to
    /// address the refusal.
    Oversized(Vec<u8>),
}

/// Splits a byte stream into MLLP frames.
#[derive(Default)]
pub(super) struct Framer {
    buffer: Vec<u8>,
    in_frame: bool,
    skipping: bool,
    head: Vec<u8>,
}

impl Framer {
    /// Whether a message has begun and not yet ended.
    pub(super) fn in_frame(&self) -> bool {
        self.in_frame
    }

    /// Split `bytes`, appending what completes to `out`.
    pub(super) fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        for &b in bytes {
            if !self.in_frame {
                // Anything outside a frame is noise.
                if b == VT {
                    self.in_frame = true;
                    self.buffer.clear();
                }
                continue;
            }
            if b == VT && !self.skipping {
                // A new start block before an end block: the old frame was truncated.
                self.buffer.clear();
                self.buffer.shrink_to(KEPT);
                continue;
            }
            if b == CR && self.buffer.last() == Some(&FS) {
                self.buffer.pop();
                self.in_frame = false;
                if self.skipping {
                    self.skipping = false;
                    out.push(Frame::Oversized(std::mem::take(&mut self.head)));
                } else {
                    out.push(Frame::Message(std::mem::take(&mut self.buffer)));
                }
                continue;
            }
            if self.skipping {
                // Keep only the last byte, to notice FS CR.
                self.buffer.clear();
                self.buffer.push(b);
                continue;
            }
            self.buffer.push(b);
            if self.buffer.len() > MAX_FRAME + 1 {
                self.skipping = true;
                self.head = self.buffer[..self.buffer.len().min(4096)].to_vec();
                self.buffer = Vec::new();
            }
        }
    }
}

/// An HL7 ACK for `message`, framed for MLLP.
pub(super) fn ack(message: &[u8], code: &str, text: &str) -> Vec<u8> {
    let text_in = String::from_utf8_lossy(message);
    let msh = text_in.split(['\r', '\n']).find(|s| s.starts_with("MSH"));
    let separator = msh.and_then(|m| m.chars().nth(3)).unwrap_or('|');
    let fields: Vec<&str> = msh
        .map(|m| m.split(separator).collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 1).copied().unwrap_or_default();
    let (encoding, control_id, version) = (field(2), field(10), field(12));
    let encoding = if encoding.is_empty() {
        "^~\\&"
    } else {
        encoding
    };
    let version = if version.is_empty() { "2.5" } else { version };
    let trigger = field(9).split('^').nth(1).unwrap_or_default();
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S");
    // Reasons must not break the segment structure.
    let text: String = text
        .chars()
        .map(|c| {
            if c == separator || c == '\r' || c == '\n' {
                ' '
            } else {
                c
            }
        })
        .take(200)
        .collect();
    let s = separator;
    let body = format!(
        "MSH{s}{encoding}{s}PLEXUS{s}{s}{}{s}{}{s}{now}{s}{s}ACK^{trigger}^ACK{s}ACK-{control_id}{s}P{s}{version}\rMSA{s}{code}{s}{control_id}{s}{text}\r",
        field(3),
        field(4),
    );
    let mut framed = Vec::with_capacity(body.len() + 3);
    framed.push(VT);
    framed.extend_from_slice(body.as_bytes());
    framed.extend_from_slice(&[FS, CR]);
    framed
}

/// Who sent `message`: its sending application and facility (MSH-3, MSH-4),
/// which with the control id (MSH-10) tell its messages from every other
/// sender's.
pub(super) fn sender(message: &[u8]) -> String {
    let head = &message[..message.len().min(1024)];
    let text = String::from_utf8_lossy(head);
    let Some(msh) = text.split(['\r', '\n']).find(|s| s.starts_with("MSH")) else {
        return String::new();
    };
    let Some(separator) = msh.chars().nth(3) else {
        return String::new();
    };
    let fields: Vec<&str> = msh.split(separator).collect();
    let field = |n: usize| fields.get(n - 1).copied().unwrap_or_default();
    format!("{}^{}", field(3), field(4))
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut framer = Framer::default();
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk, &mut out);
        }
        out
    }

    #[test]
    fn frames_survive_splits_and_noise() {
        let got = frames(&[
            b"garbage\x0bMSH|a",
            b"b\x1c",
            b"\x0d\x0d\n\x0bMSH|c\x1c\x0d",
        ]);
        assert_eq!(
            got,
            vec![
                Frame::Message(b"MSH|ab".to_vec()),
                Frame::Message(b"MSH|c".to_vec())
            ]
        );
    }

    #[test]
    fn a_restarted_frame_drops_the_truncated_one() {
        let got = frames(&[b"\x0bMSH|trunc\x0bMSH|whole\x1c\x0d"]);
        assert_eq!(got, vec![Frame::Message(b"MSH|whole".to_vec())]);
    }

    #[test]
    fn oversized_frames_are_refused_and_the_next_one_is_read() {
        let mut big = vec![VT];
        big.extend(std::iter::repeat_n(b'x', MAX_FRAME + 10));
        big.extend_from_slice(&[FS, CR, VT, b'o', b'k', FS, CR]);
        let got = frames(&[&big]);
        assert!(matches!(&got[0], Frame::Oversized(head) if head.len() == 4096));
        assert_eq!(got[1], Frame::Message(b"ok".to_vec()));
    }

    proptest::proptest! {
        /// Fuzz: any byte stream, in any chunks, frames without panicking,
        /// and every ACK built from what it finds is framed.
        #[test]
        fn fuzz_any_stream_frames_without_panicking(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..16)) {
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            for frame in frames(&refs) {
                let (Frame::Message(m) | Frame::Oversized(m)) = frame;
                let reply = ack(&m, "AA", "");
                proptest::prop_assert!(reply.starts_with(&[VT]) && reply.ends_with(&[FS, CR]));
            }
        }
    }

    #[test]
    fn the_sender_is_msh_3_and_4() {
        assert_eq!(
            sender(b"MSH|^~\\&|LAB|GEN|ERP|HOSP|20260101||ORM^O01|1001|P|2.5\rPID|1\r"),
            "LAB^GEN"
        );
        assert_eq!(sender(b"not hl7"), "");
    }

    #[test]
    fn acks_echo_the_control_id() {
        let ack = ack(
            b"MSH|^~\\&|LAB|GEN|ERP|HOSP|20260101||ORM^O01|MSG00042|P|2.5\rPID|1\r",
            "AA",
            "",
        );
        let text = String::from_utf8(ack[1..ack.len() - 2].to_vec()).unwrap();
        assert!(text.starts_with("MSH|^~\\&|PLEXUS||LAB|GEN|"), "{text}");
        assert!(text.contains("|ACK^O01^ACK|ACK-MSG00042|P|2.5\r"), "{text}");
        assert!(text.ends_with("MSA|AA|MSG00042|\r"), "{text}");
    }
}
