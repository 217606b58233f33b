//! Forwarding (CONTRACT §11): every stored event pushed to the team's own
//! brokers and HTTP endpoints, advanced only past what they confirmed.
//! One file per destination kind behind the `publish::Publisher` trait.

pub mod amqp;
pub mod endpoint;
pub mod nats;
pub mod publish;
pub mod redis;
