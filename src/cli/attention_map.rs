//! `encdec generate --attention-map FILE.svg|.png`: which source tokens the decoder
//! read while it produced each output token (cross-attention of one decoder layer,
//! averaged over its heads), drawn as a heatmap labelled with the tokens.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::generate::Session;
use super::plot::{self, draw_err, Figure};

/// Cross-attention of one generated sequence: `weights[t * sources + s]`.
#[derive(Debug, Clone)]
pub struct AttentionMap {
    pub layer: usize,
    pub heads: usize,
    pub source_tokens: Vec<String>,
    pub target_tokens: Vec<String>,
    pub weights: Vec<f32>,
    pub title: String,
}

impl AttentionMap {
    /// The map of `generated` (ids after the decoder start token) for `source`:
    /// row t is the step that produced `generated[t]`, fed `generated[t - 1]`.
    pub fn compute(
        session: &Session,
        source: &[u32],
        generated: &[u32],
        layer: Option<usize>,
    ) -> Result<Self> {
        let model = session.loaded.model.as_ref();
        let mut fed = Vec::with_capacity(generated.len().max(1));
        fed.push(model.spec().decoder_start_token_id);
        fed.extend_from_slice(&generated[..generated.len().saturating_sub(1)]);
        let (layer, probs) = model
            .cross_attention(source, &fed, layer)
            .context("--attention-map")?;
        let dims = probs.dims().to_vec();
        let (heads, t, s) = (dims[0], dims[1], dims[2]);
        let p = probs.as_f32()?;
        let mut weights = vec![0f32; t * s];
        for h in 0..heads {
            for (w, &x) in weights.iter_mut().zip(&p[h * t * s..(h + 1) * t * s]) {
                *w += x / heads as f32;
            }
        }
        let name = |id: u32| {
            session
                .tokenizer
                .id_to_token(id)
                .unwrap_or_else(|| format!("<{id}>"))
        };
        let mut source_tokens: Vec<String> = source.iter().map(|&i| name(i)).collect();
        // an empty source is encoded as one masked position
        source_tokens.resize(s, String::new());
        let target_tokens = if generated.is_empty() {
            vec![String::new()]
        } else {
            generated.iter().map(|&i| name(i)).collect()
        };
        Ok(AttentionMap {
            layer,
            heads,
            source_tokens,
            target_tokens,
            weights,
            title: String::new(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        plot::save(path, self).with_context(|| format!("--attention-map {}", path.display()))
    }

    fn title_text(&self) -> String {
        if self.title.is_empty() {
            format!(
                "cross-attention, decoder layer {} (mean of {} heads)",
                self.layer, self.heads
            )
        } else {
            self.title.clone()
        }
    }

    fn cell(&self) -> u32 {
        let n = self
            .source_tokens
            .len()
            .max(self.target_tokens.len())
            .max(1) as u32;
        (1100 / n).clamp(4, 22)
    }

    fn label_chars(tokens: &[String]) -> u32 {
        tokens
            .iter()
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(1)
            .min(24) as u32
    }

    fn layout(&self) -> Layout {
        let cell = self.cell();
        let font = (cell.saturating_sub(3)).clamp(9, 13);
        let char_w = font * 6 / 10 + 1;
        Layout {
            cell,
            font,
            left: 16 + char_w * Self::label_chars(&self.target_tokens),
            top: 48,
            bottom: 16 + char_w * Self::label_chars(&self.source_tokens),
            right: 90,
            // label every k-th token when cells are smaller than the text
            step: font.div_ceil(cell).max(1) as usize,
        }
    }
}

struct Layout {
    cell: u32,
    font: u32,
    left: u32,
    top: u32,
    bottom: u32,
    right: u32,
    step: usize,
}

/// Light yellow to dark blue through green (viridis-like, reversed so that
/// little attention is light on a white page).
fn color(x: f32) -> RGBColor {
    const STOPS: [(u8, u8, u8); 5] = [
        (255, 255, 229),
        (194, 230, 153),
        (65, 171, 93),
        (33, 102, 172),
        (8, 29, 88),
    ];
    let x = x.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f32;
    let mix = |a: u8, b: u8| (a as f32 + (b as f32 - a as f32) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Token text as drawn: at most 24 characters.
fn short(t: &str) -> String {
    if t.chars().count() <= 24 {
        t.to_string()
    } else {
        t.chars().take(23).chain(['…']).collect()
    }
}

impl Figure for AttentionMap {
    fn size(&self) -> (u32, u32) {
        let l = self.layout();
        let (s, t) = (
            self.source_tokens.len() as u32,
            self.target_tokens.len() as u32,
        );
        let title = self.title_text().chars().count() as u32 * 8 + 24;
        (
            (l.left + s * l.cell + l.right).max(420).max(title),
            l.top + t * l.cell + l.bottom,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let l = self.layout();
        let (s_n, t_n) = (self.source_tokens.len(), self.target_tokens.len());
        let cell = l.cell as i32;
        let (x0, y0) = (l.left as i32, l.top as i32);
        root.fill(&WHITE).map_err(draw_err)?;

        let max = self.weights.iter().copied().fold(0f32, f32::max).max(1e-12);
        for t in 0..t_n {
            for s in 0..s_n {
                let v = self.weights[t * s_n + s] / max;
                let (x, y) = (x0 + s as i32 * cell, y0 + t as i32 * cell);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    color(v).filled(),
                ))
                .map_err(draw_err)?;
            }
        }
        root.draw(&Rectangle::new(
            [(x0, y0), (x0 + s_n as i32 * cell, y0 + t_n as i32 * cell)],
            BLACK.stroke_width(1),
        ))
        .map_err(draw_err)?;

        let font = ("sans-serif", l.font as f64).into_font();
        let style = |h: HPos, v: VPos| font.clone().color(&BLACK).pos(Pos::new(h, v));
        root.draw(&Text::new(
            self.title_text(),
            (8, 10),
            ("sans-serif", 15.0).into_font().color(&BLACK),
        ))
        .map_err(draw_err)?;
        // generated tokens down the left, right-aligned against the grid
        for (t, tok) in self.target_tokens.iter().enumerate().step_by(l.step) {
            let y = y0 + t as i32 * cell + cell / 2;
            root.draw(&Text::new(
                short(tok),
                (x0 - 4, y),
                style(HPos::Right, VPos::Center),
            ))
            .map_err(draw_err)?;
        }
        // source tokens along the bottom, turned to read upwards
        let vertical = font
            .clone()
            .transform(FontTransform::Rotate270)
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        let below = y0 + t_n as i32 * cell + 4;
        for (s, tok) in self.source_tokens.iter().enumerate().step_by(l.step) {
            let x = x0 + s as i32 * cell + cell / 2;
            root.draw(&Text::new(short(tok), (x, below), vertical.clone()))
                .map_err(draw_err)?;
        }
        // colour bar: 0 .. the largest weight
        let bx = x0 + s_n as i32 * cell + 24;
        let bh = (t_n as i32 * cell).clamp(60, 240);
        for i in 0..bh {
            let v = 1.0 - i as f32 / (bh - 1).max(1) as f32;
            root.draw(&Rectangle::new(
                [(bx, y0 + i), (bx + 14, y0 + i + 1)],
                color(v).filled(),
            ))
            .map_err(draw_err)?;
        }
        let small = ("sans-serif", 10.0).into_font().color(&BLACK);
        root.draw(&Text::new(
            format!("{max:.3}"),
            (bx + 18, y0),
            small.clone(),
        ))
        .map_err(draw_err)?;
        root.draw(&Text::new("0", (bx + 18, y0 + bh - 10), small))
            .map_err(draw_err)?;
        Ok(())
    }
}
