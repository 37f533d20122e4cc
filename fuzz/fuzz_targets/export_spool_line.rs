#![no_main]
//! A line of the export spool (an event as JSON), read back and framed as an
//! RFC 5424 syslog message: the octet count is the message's length and the
//! JSON line for webhooks holds no newline.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let Ok(event) = serde_json::from_str::<postern_export::ExportEvent>(line) else {
        return;
    };
    let json = event.to_json_line().unwrap();
    assert!(!json.contains('\n'));
    let message = postern_export::syslog::message("host name\n", &event).unwrap();
    let framed = postern_export::syslog::frame(&message);
    let (count, rest) = framed.split_once(' ').unwrap();
    assert_eq!(count.parse::<usize>().unwrap(), rest.len());
});
