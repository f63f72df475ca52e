//! The sample payload of the inbound webhook spec, for a given hook and phone: what the
//! tests and the bench post. The email follows the phone, so that distinct phones make
//! distinct leads for the duplicate rule too.

use serde_json::{Value, json};

/// The spec's sample lead (`is_auto` 1, team `team_001`) with `hook` and a national `phone`.
pub fn payload(hook: &str, phone: &str) -> Value {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    json!({
        "hookName": hook,
        "name_field": "John Doe",
        "country_code_field": "+1",
        "phone_field": phone,
        "email_field": format!("john.doe+{digits}@example.com"),
        "company_name_field": "Acme Corp",
        "ip_address_field": "192.168.1.1",
        "industry_field": "Software",
        "message_field": "Looking for a demo.",
        "size_field": "Medium",
        "page_url_field": "https://example.com/demo",
        "page_name_field": "Demo Page",
        "date_submitted_field": "2025-01-30",
        "time_submitted_field": "14:30:00",
        "is_auto": 1,
        "status": 1,
        "team_id_field": "team_001"
    })
}
