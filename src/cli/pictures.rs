//! The course's pictures, as the course's matplotlib draws them: a chart of lines and
//! points (loss against w, the fitted line over the data, the logistic curve with its
//! 0.5 line), a function's contours with an optimizer's path (Himmelblau with Adam),
//! and a grid of digits with their labels. `--plot DIR` writes each as PNG and SVG, and
//! `--dashboard` shows it ([`crate::cli::args::Run::picture`]).

use image::ImageEncoder as _;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::cli::plot::{COLORS, legend, tick_label};

/// One picture; [`Picture::draw`] draws it on any plotters backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Picture {
    /// Lines and scattered points on one pair of axes, with optional horizontal rules.
    Chart {
        title: String,
        x_label: String,
        y_label: String,
        /// `(legend, points)`, drawn as lines.
        lines: Vec<(String, Vec<(f64, f64)>)>,
        /// `(legend, points)`, drawn as dots.
        points: Vec<(String, Vec<(f64, f64)>)>,
        /// `(y, legend)`: dashed horizontal rules (a decision threshold).
        rules: Vec<(f64, String)>,
    },
    /// `f` over a rectangle as filled contour bands (of `log(1 + f)`), with a path.
    Contours {
        title: String,
        x: (f64, f64),
        y: (f64, f64),
        /// `values[j][i]` at `x0 + i·dx`, `y0 + j·dy` on a `n × n` grid, `n = len`.
        values: Vec<Vec<f64>>,
        path: Vec<(f64, f64)>,
        /// Points to mark (the known minima).
        marks: Vec<(f64, f64)>,
    },
    /// Gray images with a caption each (`true 7` or `7 → 1`); wrong ones in red.
    Digits {
        title: String,
        width: usize,
        height: usize,
        images: Vec<Vec<u8>>,
        labels: Vec<String>,
        predicted: Option<Vec<String>>,
    },
}

const SIZE: (u32, u32) = (800, 560);

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

impl Picture {
    /// Its size in pixels (the SVG's too).
    pub fn size(&self) -> (u32, u32) {
        match self {
            Picture::Digits { images, .. } => {
                let cols = 8u32;
                let rows = images.len().div_ceil(cols as usize).max(1) as u32;
                (cols * 96 + 20, rows * 112 + 50)
            }
            _ => SIZE,
        }
    }

    /// Draws the picture on `area`.
    pub fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult {
        crate::cli::plot::register_font();
        area.fill(&WHITE).map_err(err)?;
        match self {
            Picture::Chart {
                title,
                x_label,
                y_label,
                lines,
                points,
                rules,
            } => draw_chart(area, title, x_label, y_label, lines, points, rules),
            Picture::Contours {
                title,
                x,
                y,
                values,
                path,
                marks,
            } => draw_contours(area, title, *x, *y, values, path, marks),
            Picture::Digits {
                title,
                width,
                height,
                images,
                labels,
                predicted,
            } => draw_digits(
                area,
                title,
                (*width, *height),
                images,
                labels,
                predicted.as_deref(),
            ),
        }
    }
}

fn bounds(all: impl Iterator<Item = (f64, f64)>) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in all.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    let pad = |a: f64, b: f64| {
        let d = if b > a { (b - a) * 0.05 } else { 0.5 };
        (a - d, b + d)
    };
    (pad(x0, x1), pad(y0, y1))
}

fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[(String, Vec<(f64, f64)>)],
    points: &[(String, Vec<(f64, f64)>)],
    rules: &[(f64, String)],
) -> DrawResult {
    let all = lines
        .iter()
        .chain(points)
        .flat_map(|(_, p)| p.iter().copied())
        .chain(rules.iter().map(|(y, _)| (f64::NAN, *y)));
    let ((x0, x1), _) = bounds(
        lines
            .iter()
            .chain(points)
            .flat_map(|(_, p)| p.iter().copied()),
    );
    let (_, (y0, y1)) = bounds(all.map(|(x, y)| (if x.is_nan() { x0 } else { x }, y)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    let clamp = |(x, y): (f64, f64)| (x.clamp(x0, x1), y.clamp(y0, y1));
    let mut color = 0;
    for (name, pts) in lines {
        let c = COLORS[color % COLORS.len()];
        color += 1;
        chart
            .draw_series(LineSeries::new(
                pts.iter()
                    .copied()
                    .filter(|(_, y)| y.is_finite())
                    .map(clamp),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    for (name, pts) in points {
        let c = COLORS[color % COLORS.len()];
        color += 1;
        chart
            .draw_series(
                pts.iter()
                    .copied()
                    .filter(|(_, y)| y.is_finite())
                    .map(|p| Circle::new(clamp(p), 4, c.filled())),
            )
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
    }
    for (y, name) in rules {
        let c = RGBColor(120, 120, 120);
        let dashes: Vec<f64> = (0..=60).map(|i| x0 + (x1 - x0) * i as f64 / 60.0).collect();
        chart
            .draw_series(dashes.chunks(2).map(|seg| {
                PathElement::new(
                    seg.iter().map(|&x| (x, *y)).collect::<Vec<_>>(),
                    c.stroke_width(1),
                )
            }))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(1)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight).map_err(err)?;
    area.present().map_err(err)
}

/// A colour for `t` in `[0, 1]`: dark blue through teal to yellow (viridis-like).
fn ramp(t: f64) -> RGBColor {
    let stops = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = t.clamp(0.0, 1.0) * (stops.len() - 1) as f64;
    let i = (t.floor() as usize).min(stops.len() - 2);
    let f = t - i as f64;
    let (a, b) = (stops[i], stops[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn draw_contours<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    values: &[Vec<f64>],
    path: &[(f64, f64)],
    marks: &[(f64, f64)],
) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(54)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("x")
        .y_desc("y")
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .disable_mesh()
        .draw()
        .map_err(err)?;
    let n = values.len();
    if n > 0 {
        let logs: Vec<Vec<f64>> = values
            .iter()
            .map(|row| row.iter().map(|v| v.max(0.0).ln_1p()).collect())
            .collect();
        let top = logs
            .iter()
            .flatten()
            .copied()
            .fold(0.0_f64, f64::max)
            .max(1e-12);
        // Twelve bands: equal steps of log(1 + f) look like the course's contour levels.
        let bands = 12.0;
        let (dx, dy) = ((x1 - x0) / n as f64, (y1 - y0) / n as f64);
        chart
            .draw_series(logs.iter().enumerate().flat_map(|(j, row)| {
                row.iter().enumerate().map(move |(i, v)| {
                    let t = ((v / top) * bands).floor() / bands;
                    let (x, y) = (x0 + i as f64 * dx, y0 + j as f64 * dy);
                    Rectangle::new([(x, y), (x + dx, y + dy)], ramp(t).filled())
                })
            }))
            .map_err(err)?;
    }
    let clamp = |(x, y): (f64, f64)| (x.clamp(x0, x1), y.clamp(y0, y1));
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(
            path.iter().copied().map(clamp),
            red.stroke_width(2),
        ))
        .map_err(err)?
        .label("optimizer's path")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], red.stroke_width(2)));
    chart
        .draw_series(
            path.first()
                .map(|&p| Circle::new(clamp(p), 5, WHITE.filled())),
        )
        .map_err(err)?;
    chart
        .draw_series(path.last().map(|&p| Circle::new(clamp(p), 5, red.filled())))
        .map_err(err)?;
    chart
        .draw_series(
            marks
                .iter()
                .map(|&p| Cross::new(clamp(p), 6, BLACK.stroke_width(2))),
        )
        .map_err(err)?
        .label("minima")
        .legend(|(x, y)| Cross::new((x + 9, y), 5, BLACK.stroke_width(2)));
    legend(&mut chart, SeriesLabelPosition::UpperRight).map_err(err)?;
    area.present().map_err(err)
}

fn draw_digits<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    (w, h): (usize, usize),
    images: &[Vec<u8>],
    labels: &[String],
    predicted: Option<&[String]>,
) -> DrawResult {
    area.draw(&Text::new(
        title.to_string(),
        (10, 10),
        ("sans-serif", 20).into_font(),
    ))
    .map_err(err)?;
    let scale = (80 / w.max(h).max(1)).max(1) as i32;
    for (k, img) in images.iter().enumerate() {
        let (col, row) = ((k % 8) as i32, (k / 8) as i32);
        let (ox, oy) = (10 + col * 96, 44 + row * 112);
        let wrong = predicted
            .and_then(|p| p.get(k))
            .is_some_and(|p| Some(p) != labels.get(k));
        for (i, &v) in img.iter().enumerate().take(w * h) {
            let (x, y) = ((i % w) as i32, (i / w) as i32);
            let c = RGBColor(255 - v, 255 - v, 255 - v);
            area.draw(&Rectangle::new(
                [
                    (ox + x * scale, oy + y * scale),
                    (ox + (x + 1) * scale, oy + (y + 1) * scale),
                ],
                c.filled(),
            ))
            .map_err(err)?;
        }
        let caption = match predicted.and_then(|p| p.get(k)) {
            Some(p) => format!("{} → {p}", labels.get(k).map_or("?", |s| s.as_str())),
            None => labels.get(k).cloned().unwrap_or_default(),
        };
        let color = if wrong { RGBColor(200, 30, 30) } else { BLACK };
        area.draw(&Text::new(
            caption,
            (ox, oy + h as i32 * scale + 4),
            ("sans-serif", 16).into_font().color(&color),
        ))
        .map_err(err)?;
    }
    area.present().map_err(err)
}

/// Writes `NAME.png` and `NAME.svg` of `pic` into `dir`; returns the two paths.
pub fn save(
    dir: &std::path::Path,
    name: &str,
    pic: &Picture,
) -> Result<Vec<std::path::PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let png = dir.join(format!("{name}.png"));
    let svg = dir.join(format!("{name}.svg"));
    std::fs::write(&png, png_bytes(pic)?).map_err(|e| format!("{}: {e}", png.display()))?;
    pic.draw(&SVGBackend::new(&svg, pic.size()).into_drawing_area())
        .map_err(|e| format!("{}: {e}", svg.display()))?;
    Ok(vec![png, svg])
}

/// `pic` as PNG bytes.
pub fn png_bytes(pic: &Picture) -> Result<Vec<u8>, String> {
    let (w, h) = pic.size();
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        pic.draw(&area)?;
    }
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&rgb, w, h, image::ColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The model of a one-input, one-output `step` over `n` points of `[x0, x1]` (its
/// predict program on an `[n, 1]` f32 batch): the fitted line or curve.
pub fn predict_curve(
    step: &crate::train::TrainStep,
    (x0, x1): (f64, f64),
    n: usize,
) -> Result<Vec<(f64, f64)>, Box<dyn std::error::Error>> {
    let n = n.max(2);
    let xs: Vec<f64> = (0..n)
        .map(|i| x0 + (x1 - x0) * i as f64 / (n - 1) as f64)
        .collect();
    let xf: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
    let out = step.predict(&aotgrad_runtime::Tensor::from_f32(&xf, &[n, 1])?)?;
    Ok(xs.into_iter().zip(out.to_f64_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_picture_encodes_as_a_png_of_its_size() {
        let pics = [
            Picture::Chart {
                title: "loss against w".into(),
                x_label: "w".into(),
                y_label: "MSE".into(),
                lines: vec![("MSE".into(), vec![(0.0, 18.0), (2.0, 0.0), (4.0, 18.0)])],
                points: vec![("data".into(), vec![(1.0, 2.0)])],
                rules: vec![(0.5, "p = 0.5".into())],
            },
            Picture::Contours {
                title: "Himmelblau".into(),
                x: (-6.0, 6.0),
                y: (-6.0, 6.0),
                values: vec![vec![1.0, 2.0], vec![3.0, 400.0]],
                path: vec![(0.0, 0.0), (3.0, 2.0)],
                marks: vec![(3.0, 2.0)],
            },
            Picture::Digits {
                title: "digits".into(),
                width: 2,
                height: 2,
                images: vec![vec![0, 255, 128, 0]; 3],
                labels: vec!["1".into(), "2".into(), "3".into()],
                predicted: Some(vec!["1".into(), "7".into(), "3".into()]),
            },
        ];
        for p in &pics {
            let png = png_bytes(p).unwrap();
            let img = image::load_from_memory(&png).unwrap();
            assert_eq!((img.width(), img.height()), p.size());
            // Not blank: the picture drew something besides the white background.
            let rgb = img.to_rgb8();
            assert!(rgb.pixels().any(|px| px.0 != [255, 255, 255]), "{p:?}");
        }
    }
}
