//! Who trusts whom, over real loopback connections: a pinned relay certificate (whatever the
//! name dialed), another certificate, the system roots; clients refused for their protocol or
//! their device certificate; devices that pin or allow each other peer to peer.

use rustls::pki_types::PrivatePkcs8KeyDer;

use super::{client_tls, quic_client_config};
use crate::quic::tests::{accept, bounded, dial, hello, peer_listener, relay, relay_cert};
use crate::quic::*;
use crate::wire::DEFAULT_MAX_FRAME;

#[tokio::test]
async fn a_pinned_relay_certificate_is_trusted_whatever_name_is_dialed() {
    let cert = relay_cert();
    let (server, addr) = relay(&cert);
    let device = DeviceKey::generate().unwrap();
    let config = client_config(&device, ServerTrust::PinnedCert(vec![cert.cert.clone()])).unwrap();
    let (accepted, dialed) = bounded(async {
        tokio::join!(
            accept(&server),
            dial(config, addr, "relay.example.org", false)
        )
    })
    .await;
    accepted.unwrap();
    dialed.unwrap();
}

#[tokio::test]
async fn a_relay_whose_certificate_is_not_the_pinned_one_is_refused() {
    let (server, addr) = relay(&relay_cert());
    let device = DeviceKey::generate().unwrap();
    let other = relay_cert();
    let config = client_config(&device, ServerTrust::PinnedCert(vec![other.cert])).unwrap();
    let (accepted, dialed) =
        bounded(async { tokio::join!(accept(&server), dial(config, addr, "localhost", false)) })
            .await;
    let err = dialed.unwrap_err();
    assert!(err.is_refused(), "{err:?}");
    assert!(accepted.is_err());
}

#[tokio::test]
async fn system_roots_do_not_trust_a_self_signed_relay() {
    let (server, addr) = relay(&relay_cert());
    let device = DeviceKey::generate().unwrap();
    let config = match client_config(&device, ServerTrust::SystemRoots) {
        Ok(config) => config,
        // A machine without a certificate store cannot run this test.
        Err(ConfigError::NoSystemRoots { .. }) => return,
        Err(e) => panic!("{e:?}"),
    };
    let (accepted, dialed) =
        bounded(async { tokio::join!(accept(&server), dial(config, addr, "localhost", false)) })
            .await;
    let err = dialed.unwrap_err();
    assert!(err.is_refused(), "{err:?}");
    assert!(accepted.is_err());
}

#[tokio::test]
async fn a_client_speaking_another_protocol_is_refused() {
    let cert = relay_cert();
    let (server, addr) = relay(&cert);
    let device = DeviceKey::generate().unwrap();
    for alpn in [vec![b"weft/2".to_vec()], vec![]] {
        let mut tls =
            client_tls(&device, ServerTrust::PinnedCert(vec![cert.cert.clone()])).unwrap();
        tls.alpn_protocols = alpn.clone();
        let config = quic_client_config(tls).unwrap();
        let (accepted, dialed) = bounded(async {
            tokio::join!(accept(&server), dial(config, addr, "localhost", false))
        })
        .await;
        let err = dialed.unwrap_err();
        assert!(err.is_refused(), "ALPN {alpn:?}: {err:?}");
        assert!(accepted.is_err(), "ALPN {alpn:?}");
    }
}

#[tokio::test]
async fn a_client_without_a_device_certificate_is_refused() {
    let cert = relay_cert();
    let (server, addr) = relay(&cert);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let config = quic_client_config(tls).unwrap();
    let (accepted, dialed) =
        bounded(async { tokio::join!(accept(&server), dial(config, addr, "localhost", true)) })
            .await;
    let err = dialed.unwrap_err();
    assert!(err.is_refused(), "{err:?}");
    assert!(accepted.is_err());
}

#[tokio::test]
async fn an_expired_device_certificate_is_refused() {
    let cert = relay_cert();
    let (server, addr) = relay(&cert);
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![DEVICE_SERVER_NAME.to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2001, 1, 1);
    params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let expired = DeviceKey::from_der(
        params.self_signed(&key_pair).unwrap().der().clone(),
        PrivatePkcs8KeyDer::from(key_pair.serialize_der()).into(),
    )
    .unwrap();
    let config = client_config(&expired, ServerTrust::PinnedCert(vec![cert.cert])).unwrap();
    let (accepted, dialed) =
        bounded(async { tokio::join!(accept(&server), dial(config, addr, "localhost", true)) })
            .await;
    assert!(dialed.unwrap_err().is_refused());
    assert!(accepted.is_err());
}

#[tokio::test]
async fn two_devices_of_one_user_connect_peer_to_peer() {
    let laptop = DeviceKey::generate().unwrap();
    let phone = DeviceKey::generate().unwrap();
    let (listener, addr) = peer_listener(&laptop, vec![phone.device_id()]);
    let config = client_config(&phone, ServerTrust::PinnedDevice(laptop.device_id())).unwrap();
    let (accepted, dialed) = bounded(async {
        tokio::join!(
            accept(&listener),
            dial(config, addr, DEVICE_SERVER_NAME, false)
        )
    })
    .await;
    let (accepted, dialed) = (accepted.unwrap(), dialed.unwrap());
    assert_eq!(peer_device_id(&accepted), Some(phone.device_id()));
    assert_eq!(peer_device_id(&dialed), Some(laptop.device_id()));

    // The connection carries frames: the listener's refusal would have closed it.
    let (send, _recv) = bounded(dialed.open_bi()).await.unwrap();
    let mut writer = FrameWriter::new(send, DEFAULT_MAX_FRAME);
    bounded(writer.send(&hello(phone.device_id())))
        .await
        .unwrap();
    let (_send, recv) = bounded(accepted.accept_bi()).await.unwrap();
    let mut reader = FrameReader::new(recv, DEFAULT_MAX_FRAME);
    assert_eq!(
        bounded(reader.recv()).await.unwrap(),
        Some(hello(phone.device_id()))
    );
}

#[tokio::test]
async fn a_dialer_pinning_another_device_refuses_the_listener() {
    let laptop = DeviceKey::generate().unwrap();
    let phone = DeviceKey::generate().unwrap();
    let (listener, addr) = peer_listener(&laptop, vec![phone.device_id()]);
    let expected = DeviceKey::generate().unwrap().device_id();
    let config = client_config(&phone, ServerTrust::PinnedDevice(expected)).unwrap();
    let (accepted, dialed) = bounded(async {
        tokio::join!(
            accept(&listener),
            dial(config, addr, DEVICE_SERVER_NAME, false)
        )
    })
    .await;
    let err = dialed.unwrap_err();
    assert!(err.is_refused(), "{err:?}");
    assert!(accepted.is_err());
}

#[tokio::test]
async fn a_listener_refuses_a_device_it_does_not_allow() {
    let laptop = DeviceKey::generate().unwrap();
    let phone = DeviceKey::generate().unwrap();
    let stranger = DeviceKey::generate().unwrap();
    let (listener, addr) = peer_listener(&laptop, vec![phone.device_id()]);
    let config = client_config(&stranger, ServerTrust::PinnedDevice(laptop.device_id())).unwrap();
    let (accepted, dialed) = bounded(async {
        tokio::join!(
            accept(&listener),
            dial(config, addr, DEVICE_SERVER_NAME, true)
        )
    })
    .await;
    let err = dialed.unwrap_err();
    assert!(err.is_refused(), "{err:?}");
    let err = accepted.unwrap_err();
    assert!(err.is_refused(), "{err:?}");
}
