//! PII never reaches storage: a delivery full of it, read back with `show`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::*;

#[tokio::test]
async fn stored_payloads_carry_no_ssn_card_or_cvv() {
    let app = spawn_app().await;
    let job = new_job_id();
    let delivery = json!({
        "event": "job.succeeded",
        "job_id": job,
        "pattern_id": "5b7e2f6a-0d1c-4e2a-9b8f-3c4d5e6f7a8b",
        "manifest": {
            "applicant": {"name": "Jane Roe", "SSN": "123-45-6789", "passport_number": "X1234567"},
            "payment": {"creditCard": "4111 1111 1111 1111", "cvv": "cvv-marker-a", "card_expiry": "12/26"},
            "items": [{"sku": "A1", "pan": 5555555555554444_u64, "security-code": 123}],
            "note": "Paid with card 4012-8888-8888-1881, SSN on file 219-09-9999, ref INV-1042.",
        },
        "cvv": "cvv-marker-b",
        "credit_card": "378282246310005",
        "error": null,
        "timestamp": chrono::Utc::now().to_rfc3339(),
    });
    let res = app
        .post_signed(serde_json::to_vec(&delivery).unwrap())
        .await;
    assert_eq!(res.status(), 200);

    let env: Vec<(String, String)> = secret_env(&app.db.url).into_iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(command(dir.path(), &env), &["show", &job]);
    let text = String::from_utf8(out.stdout).unwrap();
    for secret in [
        "123-45-6789",
        "123456789",
        "X1234567",
        "4111 1111 1111 1111",
        "4111111111111111",
        "5555555555554444",
        "4012-8888-8888-1881",
        "219-09-9999",
        "378282246310005",
        "cvv-marker",
    ] {
        assert!(
            !text.contains(secret),
            "`{secret}` survived redaction: {text}"
        );
    }
    let line: Value = serde_json::from_str(&text).unwrap();
    let p = &line["payload"];
    let m = &p["manifest"];

    // hash: HMAC-SHA256 under IMGGO_HASH_KEY of the canonical value, computed here.
    let key = base64::engine::general_purpose::STANDARD
        .decode(HASH_KEY)
        .unwrap();
    let hmac = |canonical: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(canonical.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    assert_eq!(m["applicant"]["SSN_hash"], hmac("123456789"));
    assert_eq!(m["applicant"]["passport_number_hash"], hmac("X1234567"));
    assert!(m["applicant"].get("SSN").is_none());
    assert_eq!(
        m["applicant"]["name"], "Jane Roe",
        "fields without rules are kept"
    );

    // mask_last4 and drop, nested, in arrays, as numbers, at the top level.
    assert_eq!(m["payment"]["creditCard"], "************1111");
    assert!(m["payment"].get("cvv").is_none());
    assert_eq!(m["payment"]["card_expiry"], "12/26");
    assert_eq!(m["items"][0]["pan"], "************4444");
    assert!(m["items"][0].get("security-code").is_none());
    assert_eq!(p["credit_card"], "***********0005");
    assert!(p.get("cvv").is_none());

    // Detection by value in free text.
    assert_eq!(
        m["note"],
        "Paid with card ************1881, SSN on file ***-**-9999, ref INV-1042."
    );
    // The envelope is untouched.
    assert_eq!(p["job_id"], job.as_str());
    assert_eq!(line["pattern_id"], "5b7e2f6a-0d1c-4e2a-9b8f-3c4d5e6f7a8b");
}
