//! The readiness chart: one horizontal bar per way clients authenticate,
//! as SVG drawn here (no script, no chart library). Every bar carries its
//! name, count and share in text and its own fill pattern, so it reads
//! without colour; the same numbers follow in a table.

use maud::{Markup, PreEscaped, html};

use crate::readiness::{Report, Status};

/// Colour and pattern of each status: (status, colour, pattern id).
const LOOK: &[(Status, &str, &str)] = &[
    (Status::Authenticated, "#116329", "solid"),
    (Status::Unapproved, "#7d4e00", "stripes"),
    (Status::Blocked, "#a40e26", "cross"),
    (Status::NoCredentials, "#57606a", "dots"),
    (Status::Failed, "#8250df", "hlines"),
    (Status::UpgradeRequired, "#0a5bd3", "vlines"),
];

const WIDTH: u32 = 800;
const LABEL: u32 = 170;
const BAR: u32 = 480;
const ROW: u32 = 34;

fn patterns() -> Markup {
    let mut defs = String::new();
    for (_, colour, id) in LOOK {
        let inner = match *id {
            "solid" => format!(r#"<rect width="8" height="8" fill="{colour}"/>"#),
            "stripes" => format!(
                r#"<path d="M-2,2 l4,-4 M0,8 l8,-8 M6,10 l4,-4" stroke="{colour}" stroke-width="2.5"/>"#
            ),
            "cross" => {
                format!(r#"<path d="M0,0 l8,8 M8,0 l-8,8" stroke="{colour}" stroke-width="2"/>"#)
            }
            "dots" => format!(r#"<circle cx="4" cy="4" r="2.2" fill="{colour}"/>"#),
            "hlines" => format!(r#"<path d="M0,4 h8" stroke="{colour}" stroke-width="3"/>"#),
            _ => format!(r#"<path d="M4,0 v8" stroke="{colour}" stroke-width="3"/>"#),
        };
        defs.push_str(&format!(
            r#"<pattern id="p-{id}" width="8" height="8" patternUnits="userSpaceOnUse">{inner}</pattern>"#
        ));
    }
    PreEscaped(defs)
}

/// The chart of one report; `id` makes its element ids unique on a page.
pub(super) fn chart(report: &Report, id: &str) -> Markup {
    let count = |s: Status| {
        report
            .by_status
            .iter()
            .find(|x| x.status == s)
            .map(|x| (x.count, x.percent))
            .unwrap_or((0, 0.0))
    };
    let height = ROW * LOOK.len() as u32 + 10;
    let title = format!(
        "How clients of listener {} authenticated: {} connection attempt(s)",
        report.listener, report.total
    );
    html! {
        figure.chart {
            svg role="img" aria-labelledby={"chart-title-" (id)} viewBox={"0 0 " (WIDTH) " " (height)} width="100%" {
                title id={"chart-title-" (id)} { (title) }
                defs { (patterns()) }
                @for (i, (status, colour, pattern)) in LOOK.iter().enumerate() {
                    @let (n, percent) = count(*status);
                    @let y = 5 + ROW * i as u32;
                    @let w = if report.total == 0 { 0 } else { ((BAR as f64) * percent / 100.0).round() as u32 };
                    g data-status=(status.as_str()) data-count=(n) {
                        text x="0" y=(y + 20) { (status.as_str().replace('_', " ")) }
                        // `{}`, not `;`: maud writes `;` as an HTML void tag
                        // (`<rect>`), which the parser leaves open inside
                        // SVG, swallowing the elements after it.
                        rect x=(LABEL) y=(y + 4) width=(BAR) height="22" fill="none" stroke="#d0d7de" {}
                        rect data-bar x=(LABEL) y=(y + 4) width=(w) height="22" fill={"url(#p-" (pattern) ")"} stroke=(colour) {}
                        text x=(LABEL + BAR + 10) y=(y + 20) { (n) " (" (format!("{percent:.1}")) "%)" }
                    }
                }
            }
            figcaption.muted { (title) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readiness::Share;

    #[test]
    fn bars_carry_their_numbers_in_text() {
        let report = Report {
            listener: "agents".into(),
            mode: "observe",
            window_seconds: 3600,
            total: 4,
            by_status: vec![
                Share {
                    status: Status::Authenticated,
                    count: 3,
                    percent: 75.0,
                },
                Share {
                    status: Status::NoCredentials,
                    count: 1,
                    percent: 25.0,
                },
            ],
            failed_reasons: Vec::new(),
            would_refuse: Vec::new(),
            legacy_sources: Vec::new(),
            needs_certificate: Vec::new(),
            would_admit: Vec::new(),
            instances: Vec::new(),
        };
        let svg = chart(&report, "a").into_string();
        assert!(
            svg.contains(r#"data-status="authenticated" data-count="3""#),
            "{svg}"
        );
        assert!(svg.contains("3 (75.0%)"), "{svg}");
        assert!(svg.contains("no credentials"), "{svg}");
        assert!(svg.contains(r#"width="360""#), "75% of the bar: {svg}");
        // Every element is closed (an open `<rect>` hides what follows).
        assert_eq!(svg.matches("</rect>").count(), 2 * LOOK.len());
    }
}
