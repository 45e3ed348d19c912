//! The benchmark's plots, SVG files in `docs/bench/` that
//! `docs/BENCHMARKS.md` shows. plotters' SVG backend without font support
//! writes text as SVG text, so no font file is needed.
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use filter::compile::synthetic::Generator;
use filter::dataplane::IngressHook;
use filter_common::PROTO_UDP;
use plotters::prelude::*;

use crate::{
    apply::Point,
    drop::{Cell, Engine},
    live::Tuples,
    tcp::{Link, Row},
};

const SIZE: (u32, u32) = (720, 440);

/// `docs/bench/<name>`, the directory made if needed.
fn path(name: &str) -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(name))
}

/// A named line of points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// Lines over a logarithmic x axis (rule counts).
fn log_lines(file: &str, title: &str, y_label: &str, series: &[Series]) -> Result<()> {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (x_max, y_max) = all.fold((10.0f64, 0.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let file = path(file)?;
    let root = SVGBackend::new(&file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((5.0f64..x_max * 2.0).log_scale(), 0.0f64..y_max * 1.15)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("rules")
        .y_desc(y_label)
        .x_label_formatter(&|x| crate::thousands(*x as usize))
        .draw()
        .map_err(plot_err)?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    legend_and_write(&mut chart, &root)
}

/// Draws the legend in the upper right and writes the file.
fn legend_and_write<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

/// Drop rate against rules, one plot per generator, a line per engine.
pub fn drop_rate(cells: &[Cell]) -> Result<()> {
    let engines = [
        Engine::Ceiling,
        Engine::Filter(IngressHook::Xdp),
        Engine::Filter(IngressHook::Tc),
        Engine::Nft,
        Engine::IptablesLegacy,
    ];
    for generator in Generator::ALL {
        let series: Vec<Series> = engines
            .iter()
            .map(|&e| Series {
                name: e.label().to_owned(),
                points: cells
                    .iter()
                    .filter(|c| {
                        c.engine == e
                            && c.generator == generator
                            && c.tuples == Tuples::Repeated
                            && c.proto == PROTO_UDP
                    })
                    .map(|c| (c.rules as f64, c.rate.seen / 1e6))
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        log_lines(
            &format!("drop-rate-{generator}.svg"),
            &format!("Live-frames drop rate, {generator} generator"),
            "Mpps dropped (one CPU)",
            &series,
        )?;
    }
    Ok(())
}

/// Apply time and peak RSS against rules (diverse generator).
pub fn apply(points: &[Point]) -> Result<()> {
    let diverse: Vec<&Point> = points
        .iter()
        .filter(|p| p.what.starts_with("diverse"))
        .collect();
    if diverse.is_empty() {
        return Ok(());
    }
    log_lines(
        "apply-time.svg",
        "filterctl apply, diverse generator",
        "seconds",
        &[
            Series {
                name: "first apply (attaches)".into(),
                points: diverse
                    .iter()
                    .map(|p| (p.rules as f64, p.apply_s))
                    .collect(),
            },
            Series {
                name: "next apply (one rule more)".into(),
                points: diverse
                    .iter()
                    .map(|p| (p.rules as f64, p.reapply_s))
                    .collect(),
            },
        ],
    )?;
    log_lines(
        "rss.svg",
        "filterd peak RSS, diverse generator",
        "MiB",
        &[Series {
            name: "VmHWM after the applies".into(),
            points: diverse
                .iter()
                .map(|p| (p.rules as f64, p.peak_kib as f64 / 1024.0))
                .collect(),
        }],
    )
}

/// TCP throughput per hook: grouped bars, instance sending and receiving.
pub fn tcp_throughput(rows: &[Row], link: Link) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let y_max = rows
        .iter()
        .map(|r| r.sending.max(r.receiving))
        .fold(0.0, f64::max);
    let file = path(match link {
        Link::Veth => "tcp.svg",
        Link::Tap => "tcp-tap.svg",
    })?;
    let root = SVGBackend::new(&file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let n = rows.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "TCP through a guarded {} (tap mode), one stream",
                link.name()
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0f64..n as f64, 0.0f64..y_max * 1.2)
        .map_err(plot_err)?;
    let labels: Vec<String> = rows.iter().map(Row::label).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("Gbit/s")
        .draw()
        .map_err(plot_err)?;
    for (k, (name, value)) in [
        (
            "instance sends (guarded ingress)",
            (|r: &Row| r.sending) as fn(&Row) -> f64,
        ),
        ("instance receives", |r: &Row| r.receiving),
    ]
    .into_iter()
    .enumerate()
    {
        let color = Palette99::pick(k).to_rgba();
        let offset = 0.1 + 0.4 * k as f64;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                let x = i as f64 + offset;
                Rectangle::new([(x, 0.0), (x + 0.38, value(r))], color.filled())
            }))
            .map_err(plot_err)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    legend_and_write(&mut chart, &root)
}
