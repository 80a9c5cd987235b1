//! Exports `accord:parser/parser@1.0.0`: a contract major this host does not
//! speak. Loading it must fail with a message naming the plugin, what it
//! exports and what the host supports. Bound with wit-bindgen directly, since
//! the SDK only speaks the supported version.

wit_bindgen::generate!({
    path: "wit",
    world: "next-major",
    generate_all,
});

struct Future;
struct Session;

impl exports::accord::parser::parser::Guest for Future {
    type Session = Session;
}

impl exports::accord::parser::parser::GuestSession for Session {
    fn open(
        _config: String,
    ) -> Result<exports::accord::parser::parser::Session, accord::types::types::PluginError> {
        Ok(exports::accord::parser::parser::Session::new(Session))
    }
    fn push(
        &self,
        _chunk: Vec<u8>,
    ) -> Result<exports::accord::parser::parser::Batch, accord::types::types::PluginError> {
        Ok(exports::accord::parser::parser::Batch {
            transactions: vec![],
            rejects: vec![],
        })
    }
    fn finish(
        &self,
    ) -> Result<exports::accord::parser::parser::Batch, accord::types::types::PluginError> {
        Ok(exports::accord::parser::parser::Batch {
            transactions: vec![],
            rejects: vec![],
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(Future);
