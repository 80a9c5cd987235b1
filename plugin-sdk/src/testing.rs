//! Run plugins natively in unit tests, the way the host drives them.

use crate::{
    Batch, Decision, Group, Item, Matcher, Parser, PluginError, Route, Router, parse_config,
};

/// Open `P` with `config` (JSON), push `input` in chunks of `chunk_size`
/// bytes, finish, and return everything it produced.
pub fn run_parser<P: Parser>(
    config: &str,
    input: &[u8],
    chunk_size: usize,
) -> Result<Batch, PluginError> {
    let mut parser = P::open(parse_config(config)?)?;
    let mut out = Batch::new();
    for chunk in input.chunks(chunk_size.max(1)) {
        parser.push(chunk, &mut out)?;
    }
    parser.finish(&mut out)?;
    Ok(out)
}

/// Open `M` with `config` (JSON) and decide every group.
pub fn run_matcher<M: Matcher>(
    config: &str,
    groups: &[Group],
) -> Result<Vec<Decision>, PluginError> {
    let mut matcher = M::open(parse_config(config)?)?;
    Ok(groups.iter().map(|g| matcher.decide(g)).collect())
}

/// Open `R` with `config` (JSON) and route every item.
pub fn run_router<R: Router>(config: &str, items: &[Item]) -> Result<Vec<Vec<Route>>, PluginError> {
    let mut router = R::open(parse_config(config)?)?;
    items.iter().map(|i| router.route(i)).collect()
}
