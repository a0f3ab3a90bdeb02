//! A missing binary fails `start` with a message naming the install command. (Its own test
//! binary: it changes environment variables, which would disturb tests running beside it.)

use real::services::{PrivateMariaDb, PrivateRedis, PrivateZk, ServiceError};

#[test]
fn missing_binaries_fail_with_the_install_command() {
    std::env::set_var("SANDTABLE_REDIS_SERVER", "/nonexistent/redis-server");
    std::env::set_var("SANDTABLE_JAVA", "/nonexistent/java");
    std::env::set_var("SANDTABLE_MARIADBD", "/nonexistent/mariadbd");
    let e = PrivateRedis::start().unwrap_err();
    assert!(matches!(e, ServiceError::NotInstalled { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("scripts/services.sh install")
            && msg.contains("apt-get install redis-server zookeeper mariadb-server"),
        "{msg}"
    );
    assert!(msg.contains("/nonexistent/redis-server"), "{msg}");
    let e = PrivateZk::start().unwrap_err();
    assert!(matches!(e, ServiceError::NotInstalled { .. }), "{e:?}");
    assert!(e.to_string().contains("scripts/services.sh install"), "{e}");
    let e = PrivateMariaDb::start().unwrap_err();
    assert!(matches!(e, ServiceError::NotInstalled { what: "mariadbd", .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/mariadbd"), "{e}");
}
