//! NATS subjects (`SubjectModel::parse`): anything parses or is refused, and whatever parses
//! renders back to the same subject (the ids inside are valid subject tokens).
#![no_main]

use daisi_domain::subject::SubjectModel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(subject) = std::str::from_utf8(data) else {
        return;
    };
    for prefix in ["websocket", "wa"] {
        let model = SubjectModel::new(prefix).expect("prefix");
        if let Ok(parsed) = model.parse(subject) {
            let rendered = model.render(&parsed.company, &parsed.agent, &parsed.kind);
            assert_eq!(rendered, subject);
            let _ = parsed.target();
        }
    }
});
