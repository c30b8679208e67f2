//! Where the client's frames begin and end in the bytes read from its connection, so reads
//! can stop at frame ends.
//!
//! tungstenite reads a frame into one buffer reserved for the whole frame and keeps that
//! buffer for the rest of the socket's life (it is reused, never shrunk): one large client
//! message would pin its size per socket. The buffer is private to tungstenite, so the socket
//! sheds it by starting a fresh WebSocket over the same connection, which is only lossless
//! when tungstenite holds no unread bytes. Reads that never cross a frame end make that
//! knowable: tungstenite returns a message as soon as its last frame is complete, without
//! reading further, so when a message was just returned and everything handed over ends at
//! a frame end, tungstenite's buffer is empty.

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask key (RFC 6455 §5.2).
const MAX_HEADER: usize = 14;

/// Most frames one client message may come in. A message is charged to the socket's rate
/// limit once, when complete; without a bound, a message that never completes (a first
/// fragment, then empty continuations forever, each a read of its own) would make the socket
/// work for free. Browsers do not fragment client messages at all.
pub const MAX_FRAGMENTS: u32 = 256;

/// The shortest header of a client frame: clients must mask, so 2 bytes and the mask key.
/// Reading that much before the second byte is known never crosses the end of a valid client
/// frame; an unmasked one ends the socket (tungstenite refuses it), so nothing is shed then.
const MIN_CLIENT_HEADER: usize = 6;

/// Position in the client's frame stream.
#[derive(Debug, Clone, Default)]
pub struct InFrames {
    /// Header bytes of the current frame seen so far (while in a header).
    head: [u8; MAX_HEADER],
    have: usize,
    /// Payload bytes of the current frame still to come; zero while in a header.
    payload_left: u64,
    /// Bytes handed over that were not counted by [`Self::read`] (sent along with the HTTP
    /// request and given to tungstenite directly); reads must go past them before the
    /// position says anything about tungstenite's buffer.
    unread_part: u64,
    /// Data frames of the current, unfinished message so far.
    fragments: u32,
}

impl InFrames {
    /// Starting after `part`, bytes of the connection given to tungstenite at its creation.
    pub fn after_part(part: &[u8]) -> Self {
        let mut frames = Self::default();
        frames.advance(part);
        frames.unread_part = part.len() as u64;
        frames
    }

    /// How many of `room` bytes the next read may take without crossing a frame end (at
    /// least one when `room` is).
    pub fn limit(&self, room: usize) -> usize {
        let want = if self.payload_left > 0 {
            usize::try_from(self.payload_left).unwrap_or(usize::MAX)
        } else if self.have < 2 {
            MIN_CLIENT_HEADER - self.have
        } else {
            header_len(&self.head[..self.have]) - self.have
        };
        room.min(want)
    }

    /// Accounts for `bytes` read from the connection and handed over.
    pub fn read(&mut self, bytes: &[u8]) {
        self.unread_part = 0;
        self.advance(bytes);
    }

    /// Whether the current message came in more than [`MAX_FRAGMENTS`] frames.
    pub fn too_fragmented(&self) -> bool {
        self.fragments > MAX_FRAGMENTS
    }

    /// Whether everything handed over ends at a frame end, past the bytes given at creation.
    pub fn at_frame_end(&self) -> bool {
        self.unread_part == 0 && self.payload_left == 0 && self.have == 0
    }

    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let need = header_len(&self.head[..self.have]) - self.have;
            let n = need.min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == header_len(&self.head[..self.have]) && self.have >= 2 {
                self.payload_left = payload_len(&self.head[..self.have]);
                // Control frames (opcode 8 and up) may come between fragments: not counted.
                let first = self.head[0];
                if first & 0x08 == 0 {
                    if first & 0x80 == 0 {
                        self.fragments = self.fragments.saturating_add(1);
                    } else {
                        self.fragments = 0;
                    }
                }
                self.have = 0;
            }
        }
    }
}

/// The length of the header that starts with `head` (2 until its second byte is known).
fn header_len(head: &[u8]) -> usize {
    let Some(&second) = head.get(1) else {
        return 2;
    };
    let length = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + length + mask
}

/// The payload length of a complete header.
fn payload_len(head: &[u8]) -> u64 {
    let second = head.get(1).copied().unwrap_or(0);
    match second & 0x7f {
        126 => head
            .get(2..4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u64::from(u16::from_be_bytes(b))),
        127 => head
            .get(2..10)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes),
        n => u64::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame of `payload` bytes (mask key zero).
    fn frame(payload: usize) -> Vec<u8> {
        let mut bytes = vec![0x81];
        if payload < 126 {
            bytes.push(0x80 | payload as u8);
        } else if let Ok(short) = u16::try_from(payload) {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&short.to_be_bytes());
        } else {
            bytes.push(0x80 | 127);
            bytes.extend_from_slice(&(payload as u64).to_be_bytes());
        }
        bytes.extend_from_slice(&[0; 4]);
        bytes.resize(bytes.len() + payload, b'x');
        bytes
    }

    /// Reads `stream` through the limits with at most `room` bytes per read; returns the read
    /// sizes and whether every read ended within one frame.
    fn read_all(frames: &mut InFrames, stream: &[u8], room: usize) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let n = frames.limit(room).min(stream.len() - at);
            assert!(n > 0, "a read of zero bytes at {at}");
            frames.read(&stream[at..at + n]);
            at += n;
            sizes.push(n);
        }
        sizes
    }

    #[test]
    fn reads_stop_at_every_frame_end() {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for payload in [0, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            stream.extend_from_slice(&frame(payload));
            ends.push(stream.len());
        }
        let mut frames = InFrames::default();
        let mut at = 0;
        let mut seen_ends = Vec::new();
        for n in read_all(&mut frames.clone(), &stream, 4096) {
            at += n;
            if ends.contains(&at) {
                seen_ends.push(at);
            }
        }
        // Every frame end is the end of some read: no read crossed one.
        assert_eq!(seen_ends, ends);
        read_all(&mut frames, &stream, 4096);
        assert!(frames.at_frame_end());
    }

    #[test]
    fn knows_when_it_is_inside_a_frame() {
        let one = frame(300);
        let mut frames = InFrames::default();
        assert!(frames.at_frame_end());
        assert_eq!(frames.limit(4096), 6, "the shortest masked header");
        frames.read(&one[..1]);
        assert!(!frames.at_frame_end(), "inside the header");
        assert_eq!(frames.limit(4096), 5);
        frames.read(&one[1..2]);
        assert_eq!(frames.limit(4096), 6, "two length bytes and the mask key");
        frames.read(&one[2..10]);
        assert!(!frames.at_frame_end(), "inside the payload");
        assert_eq!(frames.limit(4096), 298);
        assert_eq!(frames.limit(100), 100);
        frames.read(&one[10..]);
        assert!(frames.at_frame_end());
    }

    #[test]
    fn bytes_given_at_creation_count_once_a_read_follows_them() {
        let mut stream = frame(10);
        stream.extend_from_slice(&frame(20));
        // A whole frame came with the HTTP request: tungstenite may still hold it.
        let whole = InFrames::after_part(&stream[..frame(10).len()]);
        assert!(!whole.at_frame_end());
        // A frame and a part of the next: the next read continues that frame (tungstenite
        // only reads once no complete frame is left in its buffer).
        let (part, rest) = stream.split_at(frame(10).len() + 3);
        let mut frames = InFrames::after_part(part);
        assert!(!frames.at_frame_end());
        assert_eq!(
            frames.limit(4096),
            3,
            "the rest of the second frame's header"
        );
        read_all(&mut frames, rest, 4096);
        assert!(frames.at_frame_end());
    }

    #[test]
    fn any_split_of_the_stream_ends_at_the_same_place() {
        let mut stream = Vec::new();
        for payload in [3, 200, 0, 70_000, 1] {
            stream.extend_from_slice(&frame(payload));
        }
        for room in [1, 2, 3, 7, 64, 4096] {
            let mut frames = InFrames::default();
            let sizes = read_all(&mut frames, &stream, room);
            assert_eq!(sizes.iter().sum::<usize>(), stream.len());
            assert!(frames.at_frame_end(), "room {room}");
        }
    }

    #[test]
    fn a_message_in_too_many_fragments_is_noticed_and_control_frames_do_not_count() {
        // First fragment (text, FIN clear), empty continuations, a ping between them.
        let start = [0x01, 0x80, 0, 0, 0, 0];
        let continuation = [0x00, 0x80, 0, 0, 0, 0];
        let ping = [0x89, 0x80, 0, 0, 0, 0];
        let last = [0x80, 0x80, 0, 0, 0, 0];
        let mut frames = InFrames::default();
        frames.read(&start);
        for _ in 1..MAX_FRAGMENTS {
            frames.read(&continuation);
            frames.read(&ping);
        }
        assert!(!frames.too_fragmented(), "at the bound");
        frames.read(&last);
        assert!(
            !frames.too_fragmented(),
            "a complete message starts the count over"
        );
        frames.read(&start);
        for _ in 0..MAX_FRAGMENTS {
            frames.read(&continuation);
        }
        assert!(frames.too_fragmented());
    }
}
