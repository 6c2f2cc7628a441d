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
    let cols = rows
        .iter()
        .map(|r| r.len().min(per_style))
        .max()
        .unwrap_or(1);
    let gap = 2u32;
    let width = cols as u32 * (cell + gap) + gap;
    let height = rows.len() as u32 * (cell + gap) + gap;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    // Rows of one style sit in few blocks; keep only the block being read.
    let cache = BlockCache::new(0);
    for (r, items) in rows.iter().enumerate() {
        for (c, &item) in items.iter().take(per_style).enumerate() {
            let it = &ds.items[item];
            let block = cache.get(ds, it.block)?;
            let bytes = block[it.offset as usize].as_ref().map_err(Clone::clone)?;
            let img = decode_rgb(bytes, &ds.locate(item))?;
            let thumb = imageops::resize(&img, cell, cell, imageops::FilterType::Triangle);
            let (x, y) = (gap + c as u32 * (cell + gap), gap + r as u32 * (cell + gap));
            imageops::replace(&mut sheet, &thumb, x as i64, y as i64);
        }
    }
    Ok(sheet)
}
