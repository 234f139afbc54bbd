//! The page, its script and style, and the vendored chart library (uPlot, MIT, see
//! `assets/vendor/uplot/PROVENANCE.md`), embedded at build time: the dashboard needs no
//! network and no files beside the binary.

/// The page. `{{QUERY}}` becomes `?token=...` when the server requires a token, so
/// that the page's own requests carry it.
pub const INDEX_HTML: &str = include_str!("assets/index.html");

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/dashboard.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/vendor/uplot/uPlot.min.css"),
    ),
    (
        "uPlot-LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("assets/vendor/uplot/LICENSE"),
    ),
];

/// An embedded asset by name: its content type and bytes.
pub fn get(name: &str) -> Option<(&'static str, &'static [u8])> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, ty, body)| (*ty, *body))
}
