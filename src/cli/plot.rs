//! Training curves as pictures (PNG and SVG, with plotters and the bundled DejaVu Sans):
//! what `RunLog::plot` draws for `--plot DIR`.
//!
//! A dense series (one value per step) is drawn twice, as TensorBoard does: the raw
//! values as a light line, and on top an exponential moving average (TensorBoard's
//! debiased smoothing) in full colour. Sparse series (one value per epoch) get markers.
//! The y axis is logarithmic when the values are positive and span more than
//! [`LOG_SCALE_RATIO`], linear otherwise. Every point is clamped into the plotted range
//! and lines are one pixel wide where they may turn sharply, so nothing is drawn outside
//! the plot area (the bitmap backend draws thick polylines as quads whose corners
//! overshoot). Tick labels are short numbers (`500`, not `500.0`).

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Positive values spanning more than this factor get a log-scale y axis.
pub const LOG_SCALE_RATIO: f64 = 30.0;

/// A rectangle of pixels, `((x0, y0), (x1, y1))`, both corners inclusive.
pub type PixelRect = ((i32, i32), (i32, i32));

/// One named series of `(step, value)` points.
pub type Series = (String, Vec<(f64, f64)>);

/// Registers the bundled font once (plotters draws text with it; no system fonts).
pub(crate) fn register_font() {
    font()
}

fn font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans (assets/fonts, its license beside it). A font that fails to parse
        // would be a build defect, caught by the plot tests.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../../assets/fonts/DejaVuSans.ttf"),
        );
    });
}

/// The series colours (matplotlib's first six), shared with `cli::pictures`.
pub(crate) const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A series is dense (drawn raw and smoothed) from this many points on.
const DENSE: usize = 64;

/// TensorBoard's smoothing: an exponential moving average with weight `w`, debiased
/// (divided by `1 - w^t`) so the curve starts at the first value instead of at 0.
pub fn smooth(values: &[(f64, f64)], w: f64) -> Vec<(f64, f64)> {
    let mut acc = 0.0;
    let mut norm = 0.0;
    values
        .iter()
        .map(|&(x, y)| {
            acc = acc * w + (1.0 - w) * y;
            norm = norm * w + (1.0 - w);
            (x, acc / norm)
        })
        .collect()
}

/// The smoothing weight for `n` points: about `n / 50` points averaged, between
/// TensorBoard's default 0.6 and 0.98.
pub fn smoothing_for(n: usize) -> f64 {
    (1.0 - 50.0 / n.max(1) as f64).clamp(0.6, 0.98)
}

/// `v` with at most three significant digits and no trailing zeros: `500`, `0.25`,
/// `1.5e-4`.
pub fn tick_label(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { format!("{v}") };
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-3..6).contains(&mag) {
        let s = format!("{v:.2e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = m.trim_end_matches('0').trim_end_matches('.');
        return format!("{m}e{e}");
    }
    let digits = (2 - mag).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The plotted value range: all finite values, padded; `log` when they are positive and
/// span more than [`LOG_SCALE_RATIO`].
struct YRange {
    lo: f64,
    hi: f64,
    log: bool,
}

fn y_range(series: &[Series]) -> YRange {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for &(_, y) in series.iter().flat_map(|(_, p)| p) {
        lo = lo.min(y);
        hi = hi.max(y);
    }
    if lo > 0.0 && hi / lo > LOG_SCALE_RATIO {
        // A tenth of a decade of room on either side.
        return YRange {
            lo: lo / 10f64.powf(0.1),
            hi: hi * 10f64.powf(0.1),
            log: true,
        };
    }
    // A constant series (a fixed learning rate) still gets a readable band.
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1e-3) * 0.1
    };
    YRange {
        lo: lo - pad,
        hi: hi + pad,
        log: false,
    }
}

/// Draws one chart of `series` on `root`; returns the pixel rectangle of the plot area
/// (`((x0, y0), (x1, y1))`, inclusive) for tests.
pub fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    series: &[Series],
) -> Result<PixelRect, String> {
    font();
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    for &(x, _) in series.iter().flat_map(|(_, p)| p) {
        x0 = x0.min(x);
        x1 = x1.max(x);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    // A little room at both ends: a two-pixel line ending exactly on the edge would
    // overshoot it by a pixel.
    let xpad = (x1 - x0) * 0.01;
    let (x0, x1) = (x0 - xpad, x1 + xpad);
    let y = y_range(series);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(40)
        .y_label_area_size(64);
    let y_desc = if y.log { "log scale" } else { "" };
    // The same steps on either kind of y axis (the chart types differ).
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart.map_err(e)?;
            chart
                .configure_mesh()
                .x_desc("step")
                .y_desc(y_desc)
                .x_label_formatter(&|v| tick_label(*v))
                .y_label_formatter(&|v| tick_label(*v))
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(e)?;
            let (px, py) = chart.plotting_area().get_pixel_range();
            plot_series(&mut chart, series, (y.lo, y.hi)).map_err(e)?;
            legend(&mut chart, legend_position(series, (x0, x1), &y)).map_err(e)?;
            root.present().map_err(e)?;
            Ok(((px.start, py.start), (px.end - 1, py.end - 1)))
        }};
    }
    if y.log {
        finish!(builder.build_cartesian_2d(x0..x1, (y.lo..y.hi).log_scale()))
    } else {
        finish!(builder.build_cartesian_2d(x0..x1, y.lo..y.hi))
    }
}

/// The series of one chart, each point clamped into `[lo, hi]`.
fn plot_series<'a, DB: DrawingBackend + 'a, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    series: &[Series],
    (lo, hi): (f64, f64),
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    Y: Ranged<ValueType = f64>,
{
    let clamp = |p: &[(f64, f64)]| -> Vec<(f64, f64)> {
        p.iter().map(|&(x, y)| (x, y.clamp(lo, hi))).collect()
    };
    for (k, (name, p)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        if p.len() >= DENSE {
            // Raw values, light and one pixel wide (they turn sharply).
            chart.draw_series(LineSeries::new(clamp(p), color.mix(0.3).stroke_width(1)))?;
            let w = smoothing_for(p.len());
            chart
                .draw_series(LineSeries::new(clamp(&smooth(p, w)), color.stroke_width(2)))?
                .label(format!("{name} (smoothed, {w:.2})"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        } else {
            // Few points: straight segments, which a two-pixel line draws cleanly.
            chart
                .draw_series(LineSeries::new(clamp(p), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart.draw_series(
                clamp(p)
                    .into_iter()
                    .map(|(x, y)| Circle::new((x, y), 3, color.filled())),
            )?;
        }
    }
    Ok(())
}

/// Where the legend hides the least: the right-hand corner (upper or lower) with fewer
/// points in it (a rising accuracy ends top right, a falling loss bottom right).
fn legend_position(series: &[Series], x: (f64, f64), y: &YRange) -> SeriesLabelPosition {
    let frac = |v: f64| {
        if y.log {
            (v.ln() - y.lo.ln()) / (y.hi.ln() - y.lo.ln())
        } else {
            (v - y.lo) / (y.hi - y.lo)
        }
    };
    let (mut upper, mut lower) = (0usize, 0usize);
    for &(px, py) in series.iter().flat_map(|(_, p)| p) {
        if (px - x.0) / (x.1 - x.0) < 0.6 {
            continue;
        }
        match frac(py) {
            f if f > 0.6 => upper += 1,
            f if f < 0.4 => lower += 1,
            _ => {}
        }
    }
    if upper > lower {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    }
}

/// Draws the series' legend at `at` (also `cli::pictures`' legend).
pub(crate) fn legend<'a, DB: DrawingBackend + 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    at: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        let cases = [
            (500.0, "500"),
            (2500.0, "2500"),
            (0.25, "0.25"),
            (1.0, "1"),
            (0.1, "0.1"),
            (0.012345, "0.0123"),
            (1.5e-4, "1.5e-4"),
            (0.0, "0"),
            (123456789.0, "1.23e8"),
        ];
        for (v, want) in cases {
            assert_eq!(tick_label(v), want, "{v}");
        }
    }

    #[test]
    fn smoothing_is_debiased() {
        let pts: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, 2.0)).collect();
        assert!(
            smooth(&pts, 0.9)
                .iter()
                .all(|&(_, y)| (y - 2.0).abs() < 1e-12)
        );
        let s = smooth(&[(0.0, 1.0), (1.0, 3.0)], 0.5);
        assert_eq!(s, [(0.0, 1.0), (1.0, (0.25 + 1.5) / 0.75)]);
    }

    /// A noisy per-step loss over three decades and a per-epoch test loss: nothing of
    /// either colour lies outside the plot area (the old picture drew spikes into the
    /// tick labels), and the axis is logarithmic.
    #[test]
    fn curves_stay_inside_the_plot_area() {
        let mut seed = 7u64;
        let mut noise = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let loss: Vec<(f64, f64)> = (0..3000)
            .map(|i| {
                (
                    i as f64,
                    2.3 * (-(i as f64) / 300.0).exp() + 0.002 + 0.3 * noise(),
                )
            })
            .collect();
        let test: Vec<(f64, f64)> = (1..4).map(|e| (e as f64 * 938.0, 0.1 / e as f64)).collect();
        let series = vec![("loss".to_string(), loss), ("test_loss".to_string(), test)];
        assert!(y_range(&series).log);
        let (w, h) = (800u32, 480u32);
        let mut buf = vec![0u8; (w * h * 3) as usize];
        let ((x0, y0), (x1, y1)) = draw(
            BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area(),
            "loss",
            &series,
        )
        .unwrap();
        assert!(
            x0 > 40 && y1 < h as i32 - 30 && x1 < w as i32 - 10,
            "{x0} {y1} {x1}"
        );
        let near = |p: &[u8], c: RGBColor| {
            (p[0] as i32 - c.0 as i32).abs() < 40
                && (p[1] as i32 - c.1 as i32).abs() < 40
                && (p[2] as i32 - c.2 as i32).abs() < 40
        };
        let (mut inside, mut outside) = (0, 0);
        for py in 0..h as i32 {
            for px in 0..w as i32 {
                let at = ((py as u32 * w + px as u32) * 3) as usize;
                let p = &buf[at..at + 3];
                if !(near(p, COLORS[0]) || near(p, COLORS[1])) {
                    continue;
                }
                if (x0..=x1).contains(&px) && (y0..=y1).contains(&py) {
                    inside += 1;
                } else {
                    outside += 1;
                }
            }
        }
        assert!(inside > 2000, "{inside} series pixels inside");
        assert_eq!(outside, 0, "series pixels outside the plot area");
    }
}
