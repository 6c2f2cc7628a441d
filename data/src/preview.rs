//! `trainer data preview`: a contact sheet of a dataset, one row per style and one column per
//! image, so a person can see at a glance that styles differ and images within one agree.

use image::{imageops, Rgb, RgbImage};

use crate::dataset::{decode_rgb, Dataset};
use crate::error::DataError;
use crate::loader::BlockCache;

/// Up to `styles` rows (the first styles in order) of up to `per_style` images, each scaled to
/// `cell` pixels, separated by 2-pixel white gutters.
pub fn contact_sheet(
    ds: &Dataset,
    styles: usize,
    per_style: usize,
    cell: u32,
) -> Result<RgbImage, DataError> {
    let by_style = ds.items_of_style();
    let rows: Vec<&Vec<usize>> = by_style
        .iter()
        .filter(|v| !v.is_empty())
        .take(styles)
        .collect();
    if rows.is_empty() || per_style == 0 || cell == 0 {
        return Err(DataError::Empty {
            path: ds.root.clone(),
            detail: "nothing to preview".into(),
        });
    }
    // Rows of one style sit in few blocks; keep only the block being read.
    let cache = BlockCache::new(0);
    let mut cells = Vec::with_capacity(rows.len());
    for items in &rows {
        let mut row = Vec::new();
        for &item in items.iter().take(per_style) {
            let it = &ds.items[item];
            let block = cache.get(ds, it.block)?;
            let bytes = block[it.offset as usize].as_ref().map_err(Clone::clone)?;
            let img = decode_rgb(bytes, &ds.locate(item))?;
            row.push(imageops::resize(
                &img,
                cell,
                cell,
                imageops::FilterType::Triangle,
            ));
        }
        cells.push(row);
    }
    Ok(sheet(&cells))
}

/// Rows of equally sized images on white, 2-pixel white gutters; a short row leaves white
/// cells at its end.
pub fn sheet(rows: &[Vec<RgbImage>]) -> RgbImage {
    const GAP: u32 = 2;
    let (w, h) = rows
        .iter()
        .flatten()
        .next()
        .map(|i| i.dimensions())
        .unwrap_or((0, 0));
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let width = cols * (w + GAP) + GAP;
    let height = rows.len() as u32 * (h + GAP) + GAP;
    let mut out = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let (x, y) = (GAP + c as u32 * (w + GAP), GAP + r as u32 * (h + GAP));
            imageops::replace(&mut out, img, x as i64, y as i64);
        }
    }
    out
}
