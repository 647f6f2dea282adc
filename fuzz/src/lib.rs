//! Slow, obviously-correct reference implementations the fuzz targets compare the gateway's
//! fast parsers and encoders with (see `README.md`). Written from the specifications, sharing
//! no code with what they check beyond `serde_json`'s tokenizer.

pub mod reference;
