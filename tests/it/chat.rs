use crate::support::*;

#[tokio::test]
async fn two_users_chat() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "lobby").await;
    let mut b = s.join(&bob, "lobby").await;
    let id = say(&mut a, "hello bob").await;
    let got = expect_msg(&mut b, &id).await;
    assert_eq!(got["content"], "hello bob");
    assert_eq!(got["sender"], alice.username.as_str());
    assert_eq!(got["room"], "lobby");
    let echo = expect_msg(&mut a, &id).await;
    assert_eq!(echo["cursor"], got["cursor"]);
    let saved = a.expect("receipt", T).await.unwrap();
    assert_eq!(saved["status"], "saved");
    assert_eq!(saved["id"], id.as_str());
    s.stop().await;
}
