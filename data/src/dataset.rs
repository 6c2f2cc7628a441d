//! One item index over a split of Hugging Face parquet shards or over an image folder
//! (DESIGN.md, "How data flows"; formats in [`crate::hf`] and [`crate::folder`]).
//!
//! Opening reads only the small columns (style, prompt, content id), one row group at a
//! time; image bytes are read later, a *block* at a time: one parquet row group, or up to
//! [`FOLDER_BLOCK_FILES`] files of one style directory. Blocks are the unit the loader
//! caches and shuffles, so reads stay sequential within a file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;

use crate::error::DataError;
use crate::folder::scan_image_folder;
use crate::hf::{self, find_shards};
use crate::parquet_read::{IndexRow, Shard, StyleValue};

/// Files per block for image folders (a block never spans two style directories).
pub const FOLDER_BLOCK_FILES: usize = 64;

/// Split name used for image folders, which have no splits.
pub const FOLDER_SPLIT: &str = "train";

/// Encoded image bytes of one row, or why that row cannot be read.
pub type ImageBytes = Result<Vec<u8>, DataError>;

/// One row of the dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Dense index into [`Dataset::styles`].
    pub style: u32,
    pub prompt: String,
    pub content_id: Option<i64>,
    /// The block holding this item's image.
    pub block: u32,
    /// Row within the block.
    pub offset: u32,
}

#[derive(Debug, Clone, Copy)]
enum BlockSource {
    /// Row group `row_group` of shard `shard`.
    RowGroup { shard: usize, row_group: usize },
    /// Items `first_item..first_item + len` are files of `Backend::Folder`.
    Files,
}

#[derive(Debug, Clone, Copy)]
struct Block {
    first_item: usize,
    len: usize,
    source: BlockSource,
}

#[derive(Debug, Clone)]
enum Backend {
    Parquet {
        shards: Vec<Shard>,
    },
    /// Image path of every item, by item index.
    Folder {
        files: Vec<PathBuf>,
    },
}

/// The item index of one split; see the module docs. `Send + Sync`: share it in an `Arc`
/// and call [`Dataset::read_block`] from many threads.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The path given to [`Dataset::open`].
    pub root: PathBuf,
    pub split: String,
    /// Style names: `style_id` in decimal (sorted numerically), the string `style_id`
    /// (sorted lexically), or the folder path relative to ROOT (sorted lexically).
    pub styles: Vec<String>,
    /// Items in block order (block 0's rows first).
    pub items: Vec<Item>,
    blocks: Vec<Block>,
    backend: Backend,
}

impl Dataset {
    /// Opens a split: `path` is a parquet dir (HF layout, shards in `DIR/` or `DIR/data/`), a
    /// single `.parquet` file, or an image folder `ROOT/<style>/<file>.{png,jpg,jpeg,webp}`
    /// with optional `<file>.txt` prompts. For a single file `split` is ignored and the split
    /// is the file-name prefix; for folders it is ignored and the split is `"train"`.
    /// Reads only the small columns, streaming by row group; image bytes are not read.
    pub fn open(path: &Path, split: &str) -> Result<Dataset, DataError> {
        if !path.exists() {
            return Err(DataError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let shards = find_shards(path)?;
        if path.is_file() {
            let (file_split, files) = shards.into_iter().next().unwrap_or_default();
            return open_parquet(path, &file_split, &files);
        }
        if !shards.is_empty() {
            return match shards.get(split) {
                Some(files) => open_parquet(path, split, files),
                None => Err(DataError::Empty {
                    path: path.to_path_buf(),
                    detail: format!(
                        "no shards for split `{split}`; splits present: {}",
                        shards.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                }),
            };
        }
        open_folder(path)
    }

    /// Split names available under `path`, sorted (e.g. `["test", "train"]`); `["train"]`
    /// for an image folder.
    pub fn splits(path: &Path) -> Result<Vec<String>, DataError> {
        let shards = find_shards(path)?;
        if !shards.is_empty() {
            return Ok(shards.into_keys().collect());
        }
        if scan_image_folder(path)?.is_empty() {
            return Err(empty_dir_error(path));
        }
        Ok(vec![FOLDER_SPLIT.to_string()])
    }

    /// Number of blocks (parquet row groups with rows, or folder chunks).
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Rows in `block` (0 when out of range).
    pub fn block_len(&self, block: u32) -> usize {
        self.blocks.get(block as usize).map_or(0, |b| b.len)
    }

    /// Index of the first item of `block` (items of a block are contiguous).
    pub fn block_first_item(&self, block: u32) -> usize {
        self.blocks
            .get(block as usize)
            .map_or(self.items.len(), |b| b.first_item)
    }

    /// The parquet shards of this split (empty for an image folder).
    pub fn shards(&self) -> &[Shard] {
        match &self.backend {
            Backend::Parquet { shards } => shards,
            Backend::Folder { .. } => &[],
        }
    }

    /// Encoded image bytes of every row of `block`, in row order. The outer error is for the
    /// block as a whole (unreadable shard), the inner per row (null bytes and bad path,
    /// missing file). Reads only the `image` column of that one row group.
    pub fn read_block(&self, block: u32) -> Result<Vec<ImageBytes>, DataError> {
        let b = self.block(block)?;
        match (&self.backend, b.source) {
            (Backend::Parquet { shards }, BlockSource::RowGroup { shard, row_group }) => {
                shards[shard].read_images(row_group, None)
            }
            (Backend::Folder { files }, _) => Ok(files[b.first_item..b.first_item + b.len]
                .iter()
                .map(|f| std::fs::read(f).map_err(|e| DataError::io(f, e)))
                .collect()),
            (Backend::Parquet { .. }, BlockSource::Files) => Err(self.out_of_range(block)),
        }
    }

    /// Like [`Dataset::read_block`] for only some rows (`offsets` within the block, any
    /// order; duplicates read once). Parquet reads skip the pages of other rows (page index).
    /// Returns `(offset, bytes)` sorted by offset.
    pub fn read_block_rows(
        &self,
        block: u32,
        offsets: &[u32],
    ) -> Result<Vec<(u32, ImageBytes)>, DataError> {
        let b = self.block(block)?;
        let wanted: BTreeSet<u32> = offsets.iter().copied().collect();
        if let Some(&bad) = wanted.iter().find(|&&o| o as usize >= b.len) {
            return Err(DataError::BadRow {
                at: format!("{} block {block}", self.root.display()),
                detail: format!("offset {bad} out of range (block has {} rows)", b.len),
            });
        }
        let wanted: Vec<u32> = wanted.into_iter().collect();
        let bytes = match (&self.backend, b.source) {
            (Backend::Parquet { shards }, BlockSource::RowGroup { shard, row_group }) => {
                let rows: Vec<usize> = wanted.iter().map(|&o| o as usize).collect();
                shards[shard].read_images(row_group, Some(&rows))?
            }
            (Backend::Folder { files }, _) => wanted
                .iter()
                .map(|&o| {
                    let f = &files[b.first_item + o as usize];
                    std::fs::read(f).map_err(|e| DataError::io(f, e))
                })
                .collect(),
            (Backend::Parquet { .. }, BlockSource::Files) => return Err(self.out_of_range(block)),
        };
        Ok(wanted.into_iter().zip(bytes).collect())
    }

    /// The decoded image of one item, reading only its row; errors name the item's file and
    /// row.
    pub fn image(&self, item: usize) -> Result<RgbImage, DataError> {
        let it = self.items.get(item).ok_or_else(|| DataError::BadRow {
            at: self.locate(item),
            detail: "no such item".into(),
        })?;
        let (_, bytes) = self
            .read_block_rows(it.block, &[it.offset])?
            .pop()
            .ok_or_else(|| DataError::BadRow {
                at: self.locate(item),
                detail: "its block returned no row".into(),
            })?;
        decode_rgb(&bytes?, &self.locate(item))
    }

    /// Human location of an item for error messages: `"DIR/train-00000-of-00002.parquet row
    /// 17 column image"` (row within the shard) or the image path for folders.
    pub fn locate(&self, item: usize) -> String {
        let Some(it) = self.items.get(item) else {
            return format!(
                "{} item {item} (out of range: {} items)",
                self.root.display(),
                self.items.len()
            );
        };
        let Some(b) = self.blocks.get(it.block as usize) else {
            return format!("{} item {item}", self.root.display());
        };
        match (&self.backend, b.source) {
            (Backend::Parquet { shards }, BlockSource::RowGroup { shard, row_group }) => {
                let s = &shards[shard];
                s.location(
                    s.row_group_start(row_group) + it.offset as u64,
                    hf::IMAGE_COLUMN,
                )
            }
            (Backend::Folder { files }, _) => files[item].display().to_string(),
            _ => format!("{} item {item}", self.root.display()),
        }
    }

    /// The file holding `item`: its parquet shard, or its image for folders.
    pub fn source_file(&self, item: usize) -> Option<&Path> {
        let block = self.blocks.get(self.items.get(item)?.block as usize)?;
        match (&self.backend, block.source) {
            (Backend::Parquet { shards }, BlockSource::RowGroup { shard, .. }) => {
                shards.get(shard).map(Shard::path)
            }
            (Backend::Folder { files }, _) => files.get(item).map(PathBuf::as_path),
            _ => None,
        }
    }

    /// Style index -> item indices (ascending).
    pub fn items_of_style(&self) -> Vec<Vec<usize>> {
        let mut by_style = vec![Vec::new(); self.styles.len()];
        for (i, it) in self.items.iter().enumerate() {
            if let Some(list) = by_style.get_mut(it.style as usize) {
                list.push(i);
            }
        }
        by_style
    }

    /// Paired sampling needs every style to have >= 2 images (a positive pair) and >= 2
    /// styles (a negative). Fails with [`DataError::SingleImageStyle`] naming the style and
    /// the file of its one image, or [`DataError::Empty`] when there are fewer than 2 styles.
    pub fn validate_pairs(&self) -> Result<(), DataError> {
        for (style, items) in self.items_of_style().iter().enumerate() {
            if items.len() < 2 {
                let path = items
                    .first()
                    .and_then(|&i| self.source_file(i))
                    .map_or_else(|| self.root.clone(), Path::to_path_buf);
                return Err(DataError::SingleImageStyle {
                    path,
                    style: self.styles[style].clone(),
                });
            }
        }
        if self.styles.len() < 2 {
            return Err(DataError::Empty {
                path: self.root.clone(),
                detail: format!(
                    "split `{}` has {} style(s); paired sampling needs at least 2 (negatives come from other styles)",
                    self.split,
                    self.styles.len()
                ),
            });
        }
        Ok(())
    }

    /// Sequential `(item index, bytes)` over all blocks in order, one block in memory at a
    /// time. A block that cannot be read yields one `Err` and the stream goes on with the
    /// next block.
    pub fn stream(&self) -> impl Iterator<Item = Result<(usize, ImageBytes), DataError>> + '_ {
        (0..self.blocks.len() as u32).flat_map(move |block| {
            let first = self.block_first_item(block);
            let rows: Box<dyn Iterator<Item = _>> = match self.read_block(block) {
                Ok(rows) => Box::new(
                    rows.into_iter()
                        .enumerate()
                        .map(move |(i, r)| Ok((first + i, r))),
                ),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            rows
        })
    }

    fn block(&self, block: u32) -> Result<Block, DataError> {
        self.blocks
            .get(block as usize)
            .copied()
            .ok_or_else(|| self.out_of_range(block))
    }

    fn out_of_range(&self, block: u32) -> DataError {
        DataError::BadRow {
            at: format!("{} block {block}", self.root.display()),
            detail: format!(
                "block out of range (dataset has {} blocks)",
                self.blocks.len()
            ),
        }
    }
}

/// Decodes PNG/JPEG/WebP bytes to RGB (alpha dropped, grey expanded); `at` names the row
/// (e.g. from [`Dataset::locate`]) for the [`DataError::Decode`] message.
pub fn decode_rgb(bytes: &[u8], at: &str) -> Result<RgbImage, DataError> {
    decode_rgb_lazy(bytes, || at.to_string())
}

/// [`decode_rgb`] for hot loops: the location string is built only if decoding fails, and an
/// image that is already 8-bit RGB is moved out rather than copied.
pub fn decode_rgb_lazy(bytes: &[u8], at: impl FnOnce() -> String) -> Result<RgbImage, DataError> {
    match image::load_from_memory(bytes) {
        Ok(image::DynamicImage::ImageRgb8(img)) => Ok(img),
        Ok(img) => Ok(img.to_rgb8()),
        Err(e) => Err(DataError::Decode {
            at: at(),
            detail: e.to_string(),
        }),
    }
}

fn empty_dir_error(path: &Path) -> DataError {
    DataError::Empty {
        path: path.to_path_buf(),
        detail: "no .parquet shards (in DIR or DIR/data) and no images in DIR/<style>/".into(),
    }
}

/// Builds the index of `files` (the shards of one split), reading shards in parallel.
fn open_parquet(root: &Path, split: &str, files: &[PathBuf]) -> Result<Dataset, DataError> {
    type ShardIndex = (Shard, Vec<(usize, Vec<IndexRow>)>);
    let indexed: Vec<ShardIndex> = files
        .par_iter()
        .map(|file| {
            let shard = Shard::open(file)?;
            let groups = (0..shard.num_row_groups())
                .filter(|&rg| shard.row_group_rows(rg) > 0)
                .map(|rg| shard.read_index(rg).map(|rows| (rg, rows)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((shard, groups))
        })
        .collect::<Result<_, DataError>>()?;

    // Styles must be all ids or all names, else their order and identity are ambiguous.
    if let Some((first, _)) = indexed.first() {
        if let Some((odd, _)) = indexed
            .iter()
            .find(|(s, _)| s.styles_are_names() != first.styles_are_names())
        {
            return Err(DataError::Schema {
                file: odd.path().to_path_buf(),
                column: hf::STYLE_COLUMN.into(),
                detail: format!(
                    "is {} here but {} in {}; all shards of a split must agree",
                    if odd.styles_are_names() {
                        "a string"
                    } else {
                        "an integer"
                    },
                    if first.styles_are_names() {
                        "a string"
                    } else {
                        "an integer"
                    },
                    first.path().display()
                ),
            });
        }
    }
    let style_values: BTreeSet<&StyleValue> = indexed
        .iter()
        .flat_map(|(_, groups)| {
            groups
                .iter()
                .flat_map(|(_, rows)| rows.iter().map(|r| &r.style))
        })
        .collect();
    let styles: Vec<String> = style_values
        .iter()
        .map(|v| match v {
            StyleValue::Id(id) => id.to_string(),
            StyleValue::Name(name) => name.clone(),
        })
        .collect();
    // Owned keys (one clone per distinct style) so the rows can be consumed below.
    let style_index: BTreeMap<StyleValue, u32> = style_values
        .into_iter()
        .enumerate()
        .map(|(i, v)| (v.clone(), i as u32))
        .collect();

    let mut items = Vec::new();
    let mut blocks = Vec::new();
    let mut shards = Vec::with_capacity(indexed.len());
    for (shard_index, (shard, groups)) in indexed.into_iter().enumerate() {
        shards.push(shard);
        for (row_group, rows) in groups {
            let block = to_u32(blocks.len(), root, "blocks")?;
            blocks.push(Block {
                first_item: items.len(),
                len: rows.len(),
                source: BlockSource::RowGroup {
                    shard: shard_index,
                    row_group,
                },
            });
            for (offset, row) in rows.into_iter().enumerate() {
                items.push(Item {
                    style: style_index[&row.style],
                    prompt: row.prompt,
                    content_id: row.content_id,
                    block,
                    offset: to_u32(offset, root, "rows in a row group")?,
                });
            }
        }
    }
    if items.is_empty() {
        return Err(DataError::Empty {
            path: root.to_path_buf(),
            detail: format!("split `{split}` has zero rows in {} file(s)", files.len()),
        });
    }
    Ok(Dataset {
        root: root.to_path_buf(),
        split: split.to_string(),
        styles,
        items,
        blocks,
        backend: Backend::Parquet { shards },
    })
}

/// Builds the index of an image folder: one style per directory, blocks of at most
/// [`FOLDER_BLOCK_FILES`] files of one directory.
fn open_folder(root: &Path) -> Result<Dataset, DataError> {
    let style_dirs = scan_image_folder(root)?;
    if style_dirs.is_empty() {
        return Err(empty_dir_error(root));
    }
    let mut items = Vec::new();
    let mut blocks = Vec::new();
    let mut files = Vec::new();
    for (style, dir) in style_dirs.iter().enumerate() {
        for chunk in dir.images.chunks(FOLDER_BLOCK_FILES) {
            let block = to_u32(blocks.len(), root, "blocks")?;
            blocks.push(Block {
                first_item: items.len(),
                len: chunk.len(),
                source: BlockSource::Files,
            });
            for (offset, image) in chunk.iter().enumerate() {
                items.push(Item {
                    style: to_u32(style, root, "styles")?,
                    prompt: image.prompt.clone(),
                    content_id: None,
                    block,
                    offset: offset as u32,
                });
                files.push(image.path.clone());
            }
        }
    }
    Ok(Dataset {
        root: root.to_path_buf(),
        split: FOLDER_SPLIT.to_string(),
        styles: style_dirs.into_iter().map(|d| d.name).collect(),
        items,
        blocks,
        backend: Backend::Folder { files },
    })
}

fn to_u32(n: usize, root: &Path, what: &str) -> Result<u32, DataError> {
    u32::try_from(n).map_err(|_| DataError::BadRow {
        at: root.display().to_string(),
        detail: format!("too many {what} ({n}) for a u32 index"),
    })
}
