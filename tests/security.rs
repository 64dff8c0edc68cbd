//! Who gets in and what they may do: disabled users, IP allow lists
//! (IPv4 and IPv6 CIDRs), anonymous access (off by default, read-only
//! unless configured), and per-user "TLS required".

mod common;

use common::{code_of, Backend, Gateway, Options, TestUser, PASSWORD};

fn user(name: &str, extra: &str) -> TestUser {
    TestUser {
        extra: extra.into(),
        ..TestUser::full(name, &format!("/{name}"))
    }
}

async fn login_code(gw: &Gateway, name: &str, password: &str) -> Option<u32> {
    let mut ftp = gw.connect().await;
    match ftp.login(name, password).await {
        Ok(()) => None,
        Err(suppaftp::FtpError::UnexpectedResponse(r)) => Some(r.status.code()),
        Err(e) => panic!("{name}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_users_and_allow_lists() {
    let opts = Options {
        users: vec![
            user("alice", ""),
            user("gone", "enabled = false"),
            user(
                "office",
                "allowed_ips = [\"10.0.0.0/8\", \"2001:db8::/32\"]",
            ),
            user("local4", "allowed_ips = [\"127.0.0.0/8\"]"),
            user("local6only", "allowed_ips = [\"::1/128\"]"),
        ],
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::Memory, opts).await else {
        return;
    };
    assert_eq!(login_code(&gw, "alice", PASSWORD).await, None);
    assert_eq!(
        login_code(&gw, "gone", PASSWORD).await,
        Some(530),
        "disabled user"
    );
    assert_eq!(
        login_code(&gw, "office", PASSWORD).await,
        Some(530),
        "not from 10/8"
    );
    assert_eq!(
        login_code(&gw, "local4", PASSWORD).await,
        None,
        "127.0.0.1 allowed"
    );
    assert_eq!(
        login_code(&gw, "local6only", PASSWORD).await,
        Some(530),
        "IPv4 client against an IPv6-only list"
    );
    assert_eq!(
        login_code(&gw, "nobody", PASSWORD).await,
        Some(530),
        "unknown user"
    );
    assert_eq!(
        login_code(&gw, "alice", "wrong").await,
        Some(530),
        "wrong password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_is_off_by_default() {
    let Some(gw) = Gateway::start(Backend::Memory).await else {
        return;
    };
    assert_eq!(
        login_code(&gw, "anonymous", "guest@example.com").await,
        Some(530)
    );
    assert_eq!(login_code(&gw, "ftp", "").await, Some(530));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_is_read_only_and_jailed_when_enabled() {
    let opts = Options {
        sections: "[auth]\nanonymous = true\nanonymous_home = \"/pub\"\n".into(),
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::Local, opts).await else {
        return;
    };
    gw.put_object("pub/readme.txt", b"public").await;
    gw.put_object("private.txt", b"secret").await;
    let mut ftp = gw.connect().await;
    ftp.login("anonymous", "guest@example.com")
        .await
        .expect("anonymous login");
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .await
        .expect("TYPE I");
    let names = ftp.nlst(None).await.expect("NLST");
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with("readme.txt"));
    let mut data = Vec::new();
    {
        use tokio::io::AsyncReadExt;
        let mut s = ftp.retr_as_stream("readme.txt").await.expect("RETR");
        s.read_to_end(&mut data).await.expect("read");
        s.finish().await.expect("226");
    }
    assert_eq!(data, b"public");
    assert_eq!(
        transfer_code!(ftp.retr_as_stream("../private.txt").await),
        550
    );
    assert_eq!(transfer_code!(ftp.put_with_stream("upload.txt").await), 550);
    assert_eq!(code_of(ftp.mkdir("d").await), 550);
    assert_eq!(code_of(ftp.rm("readme.txt").await), 550);
    assert_eq!(code_of(ftp.rename("readme.txt", "x.txt").await), 550);
    assert_eq!(
        gw.object("pub/readme.txt").await.as_deref(),
        Some(&b"public"[..])
    );
    assert_eq!(gw.object("pub/upload.txt").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_user_is_refused_in_plain_text() {
    let opts = Options {
        users: vec![user("alice", ""), user("careful", "tls_required = true")],
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::Memory, opts).await else {
        return;
    };
    assert_eq!(login_code(&gw, "careful", PASSWORD).await, Some(530));
    assert_eq!(login_code(&gw, "alice", PASSWORD).await, None);
}

/// A user with their own storage URL lives there; the others share the
/// default store. One gateway, several buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_storage_urls() {
    let opts = Options {
        users: vec![user("alice", ""), user("bob", "storage = \"memory://\"")],
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::Local, opts).await else {
        return;
    };
    let mut bob = gw.login("bob").await;
    let mut data: &[u8] = b"bob's own bucket";
    bob.put_file("b.txt", &mut data).await.expect("STOR");
    assert_eq!(bob.size("b.txt").await.expect("SIZE"), 16);
    let mut alice = gw.login("alice").await;
    let mut data: &[u8] = b"shared store";
    alice.put_file("a.txt", &mut data).await.expect("STOR");
    // alice's file is on disk under her home; bob's is not on disk at all.
    assert_eq!(
        gw.object("alice/a.txt").await.as_deref(),
        Some(&b"shared store"[..])
    );
    assert_eq!(gw.object("bob/b.txt").await, None);
    assert!(!gw.dir.path().join("root/bob").exists());
    assert_eq!(code_of(bob.size("../alice/a.txt").await), 550);
}
