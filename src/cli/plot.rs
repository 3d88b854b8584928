//! Figures saved as SVG or PNG, chosen by the file's extension.
//!
//! A figure draws itself on any plotters backend; [`save`] picks the SVG backend
//! (text stays text, the viewer's fonts render it) or an RGB bitmap encoded as PNG
//! (text drawn with the DejaVu Sans subset embedded from assets/fonts/).

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Something drawn at a fixed pixel size.
pub trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// A plotters drawing error as an anyhow error.
pub fn draw_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// Writes `figure` to `path`: `.svg` or `.png`. A failed PNG leaves no file.
pub fn save(path: &Path, figure: &impl Figure) -> Result<()> {
    register_font();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let (w, h) = figure.size();
    match ext.as_deref() {
        Some("svg") => {
            let root = SVGBackend::new(path, (w, h)).into_drawing_area();
            figure.draw(&root)?;
            root.present()
                .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
        }
        Some("png") => {
            let mut rgb = vec![0u8; w as usize * h as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
                figure.draw(&root)?;
                root.present().map_err(draw_err)?;
            }
            write_png(path, w, h, &rgb)
        }
        _ => bail!("{}: the file name must end in .svg or .png", path.display()),
    }
}

fn write_png(path: &Path, w: u32, h: u32, rgb: &[u8]) -> Result<()> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().context("PNG header")?;
        writer.write_image_data(rgb).context("PNG data")?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// plotters' ab_glyph text needs its fonts registered before the first text.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let font: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // the embedded font is valid: the plot tests draw text with it
            let _ = plotters::style::register_font("sans-serif", style, font);
        }
    });
}
