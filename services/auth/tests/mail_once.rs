//! Mail goes out exactly once when several auth instances dispatch one outbox: two
//! dispatchers, each with its own connection to one real PostgreSQL database (as two
//! instances have), drain the same queue at the same time.

use sdsim_auth::mail::{Mail, SendError, Sender};
use sdsim_store::{migrate, Options, Store};
use std::sync::{Arc, Barrier, Mutex};

/// Records every delivery (the recipient), shared by both instances' senders.
struct Recording(Arc<Mutex<Vec<String>>>);

impl Sender for Recording {
    fn send(&self, _kind: &str, recipient: &str, _body: &str) -> Result<(), SendError> {
        self.0.lock().unwrap().push(recipient.to_string());
        Ok(())
    }
}

fn on_monoio<T>(f: impl std::future::Future<Output = T>) -> T {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(f)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const QUEUED: usize = 60;

#[test]
fn two_dispatchers_on_one_postgres_send_each_queued_mail_exactly_once() {
    let url = sdsim_testing::postgres::fresh_database_url();
    let delivered = Arc::new(Mutex::new(Vec::new()));
    on_monoio(async {
        let store = Store::open(&url, &Options::default()).unwrap();
        migrate::run(&store).await.unwrap();
        let mail = Mail::new(Box::new(Recording(Arc::clone(&delivered))));
        let queue = (0..QUEUED)
            .map(|i| mail.queue("verify_email", &format!("u{i}@example.com"), "body", now()))
            .collect();
        store.batch(queue).await.unwrap();
    });
    let start = Arc::new(Barrier::new(2));
    let instances: Vec<_> = (0..2)
        .map(|_| {
            let (url, delivered, start) = (url.clone(), Arc::clone(&delivered), Arc::clone(&start));
            std::thread::spawn(move || {
                on_monoio(async move {
                    let store = Store::open(&url, &Options::default()).unwrap();
                    store.ping().await.unwrap();
                    let mail = Mail::new(Box::new(Recording(delivered)));
                    start.wait();
                    let mut sent = 0;
                    loop {
                        let n = mail.dispatch_once(&store, now()).await.unwrap();
                        sent += n;
                        let pending = store
                            .query(
                                "SELECT COUNT(*) FROM auth_schema.outbox WHERE sent_at IS NULL",
                                vec![],
                            )
                            .await
                            .unwrap();
                        if n == 0 && pending[0].int(0).unwrap() == 0 {
                            return sent;
                        }
                    }
                })
            })
        })
        .collect();
    let per_instance: Vec<usize> = instances.into_iter().map(|t| t.join().unwrap()).collect();
    let mut delivered = delivered.lock().unwrap().clone();
    assert_eq!(
        delivered.len(),
        QUEUED,
        "deliveries (per instance: {per_instance:?})"
    );
    assert_eq!(per_instance.iter().sum::<usize>(), QUEUED);
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), QUEUED, "every recipient got its one mail");
    let unsent = on_monoio(async {
        let store = Store::open(&url, &Options::default()).unwrap();
        store
            .query(
                "SELECT COUNT(*) FROM auth_schema.outbox WHERE sent_at IS NULL OR claimed_until IS NOT NULL OR payload <> ''",
                vec![],
            )
            .await
            .unwrap()[0]
            .int(0)
            .unwrap()
    });
    assert_eq!(unsent, 0, "every row sent, released and blanked");
}
