//! Scans an image-folder dataset: `ROOT/<style>/<file>.{png,jpg,jpeg,webp}` with an optional
//! `<file>.txt` prompt next to each image (the layout of torchvision's `ImageFolder` and of
//! Hugging Face's `imagefolder` builder, with caption files as in kohya-style datasets).
//!
//! Style directories may be nested: every directory that directly holds images is one style,
//! named by its path relative to ROOT with `/` separators (`ROOT/ink/wash/a.png` -> style
//! `ink/wash`). Styles are sorted lexically by name, files by file name. Hidden entries
//! (starting with `.`) are skipped; images directly in ROOT are an error (they have no style).

use std::path::{Path, PathBuf};

use crate::error::DataError;

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// How deep style directories may nest; guards against symlink cycles.
const MAX_DEPTH: usize = 16;

/// One image of a folder dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderImage {
    pub path: PathBuf,
    /// Contents of `<stem>.txt` (trailing whitespace trimmed), or empty.
    pub prompt: String,
}

/// One style directory and its images, sorted by file name.
#[derive(Debug, Clone, PartialEq)]
pub struct StyleDir {
    /// Path relative to ROOT, `/`-separated.
    pub name: String,
    pub dir: PathBuf,
    pub images: Vec<FolderImage>,
}

/// Whether `path` has one of [`IMAGE_EXTENSIONS`].
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Scans `root` (see module docs). Returns the style directories sorted by name; an empty
/// list when there are no images at all (the caller decides whether that is an error).
pub fn scan_image_folder(root: &Path) -> Result<Vec<StyleDir>, DataError> {
    if !root.exists() {
        return Err(DataError::NotFound {
            path: root.to_path_buf(),
        });
    }
    let (files, subdirs) = list_dir(root)?;
    if let Some(stray) = files.iter().find(|f| is_image_file(f)) {
        return Err(DataError::Layout {
            path: stray.clone(),
            detail: "image directly in the dataset root; put each image in ROOT/<style>/".into(),
        });
    }
    let mut styles = Vec::new();
    for dir in subdirs {
        scan_style_dir(root, &dir, 1, &mut styles)?;
    }
    styles.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(styles)
}

/// Adds `dir` (if it holds images) and its subdirectories to `styles`.
fn scan_style_dir(
    root: &Path,
    dir: &Path,
    depth: usize,
    styles: &mut Vec<StyleDir>,
) -> Result<(), DataError> {
    if depth > MAX_DEPTH {
        return Err(DataError::Layout {
            path: dir.to_path_buf(),
            detail: format!(
                "style directories nested deeper than {MAX_DEPTH} levels (a symlink loop?)"
            ),
        });
    }
    let (files, subdirs) = list_dir(dir)?;
    let mut images = Vec::new();
    for file in files.iter().filter(|f| is_image_file(f)) {
        let prompt_file = file.with_extension("txt");
        let prompt = if prompt_file.is_file() {
            let raw = std::fs::read(&prompt_file).map_err(|e| DataError::io(&prompt_file, e))?;
            String::from_utf8(raw)
                .map_err(|e| DataError::BadRow {
                    at: prompt_file.display().to_string(),
                    detail: format!("prompt file is not UTF-8: {e}"),
                })?
                .trim_end()
                .to_string()
        } else {
            String::new()
        };
        images.push(FolderImage {
            path: file.clone(),
            prompt,
        });
    }
    if !images.is_empty() {
        let relative = dir.strip_prefix(root).unwrap_or(dir);
        let name: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        styles.push(StyleDir {
            name: name.join("/"),
            dir: dir.to_path_buf(),
            images,
        });
    }
    for sub in subdirs {
        scan_style_dir(root, &sub, depth + 1, styles)?;
    }
    Ok(())
}

/// Non-hidden files and directories of `dir`, each sorted by name.
fn list_dir(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), DataError> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // fs::metadata follows symlinks, so a linked style directory counts.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => dirs.push(path),
            Ok(m) if m.is_file() => files.push(path),
            _ => {} // dangling link or special file: not part of the dataset
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}
