//! A TensorBoard event-file writer for scalars, without TensorFlow or a protobuf crate.
//!
//! An event file is a TFRecord stream (tensorflow/core/lib/io/record_writer.cc): each
//! record is `u64 length | masked crc32c(length) | data | masked crc32c(data)`, little
//! endian, and each record's data is one `tensorflow.Event` protobuf
//! (tensorflow/core/util/event.proto, tensorboard/compat/proto/summary.proto):
//!
//! ```text
//! Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
//!              Summary summary = 5; SessionLog session_log = 7; }
//! Summary    { repeated Value value = 1; }
//! Value      { string tag = 1; float simple_value = 2; }
//! SessionLog { SessionStatus status = 1; }   // START = 1
//! ```
//!
//! The first record is `file_version: "brain.Event:2"`, the second a `SessionLog START` at
//! the first step this file will log: TensorBoard then drops the events at that step and
//! later from earlier files of the run, as PyTorch's `SummaryWriter(purge_step=..)` does,
//! so a resumed run does not draw the abandoned steps over the new ones.
//! Non-finite values are written as they are (NaN and +-inf are valid floats, and
//! TensorBoard marks them): a diverging loss should show in the plot, not vanish from it.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<unix>.<host>.<pid>` (with a `.N` suffix should that
    /// exist) whose first logged step will be `first_step`.
    pub fn create(dir: &Path, first_step: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let now = unix_time();
        let base = format!(
            "events.out.tfevents.{}.{}.{}",
            now as u64,
            hostname(),
            std::process::id()
        );
        let mut n = 0;
        let (file, path) = loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        };
        let mut w = EventWriter {
            file: BufWriter::new(file),
            path,
        };
        let step = first_step as i64;
        let mut version = Vec::new();
        put_string(&mut version, 3, "brain.Event:2");
        w.write(&event(now, step, &version))?;
        let mut start = Vec::new();
        put_varint_field(&mut start, 1, 1);
        let mut session = Vec::new();
        put_bytes(&mut session, 7, &start);
        w.write(&event(now, step, &session))?;
        w.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One event holding a scalar summary per value (f64 narrowed to TensorBoard's f32).
    pub fn scalars(&mut self, step: u64, wall_time: f64, values: &[(&str, f64)]) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, v) in values {
            let mut value = Vec::new();
            put_string(&mut value, 1, tag);
            put_key(&mut value, 2, 5);
            value.extend_from_slice(&(*v as f32).to_le_bytes());
            put_bytes(&mut summary, 1, &value);
        }
        let mut what = Vec::new();
        put_bytes(&mut what, 5, &summary);
        self.write(&event(wall_time, step as i64, &what))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let r = (|| {
            self.file.write_all(&len)?;
            self.file.write_all(&masked_crc(&len).to_le_bytes())?;
            self.file.write_all(data)?;
            self.file.write_all(&masked_crc(data).to_le_bytes())
        })();
        r.with_context(|| format!("writing {}", self.path.display()))
    }
}

pub fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The host name for the file name (TensorBoard's convention, so files of several machines
/// writing one folder do not collide), reduced to characters safe in a file name.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

/// TFRecord's checksum: CRC-32C rotated and offset, since a CRC over data that itself
/// holds CRCs is weak (record_writer.cc).
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn event(wall_time: f64, step: i64, what: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(what.len() + 20);
    put_key(&mut out, 1, 1);
    out.extend_from_slice(&wall_time.to_le_bytes());
    put_varint_field(&mut out, 2, step as u64);
    out.extend_from_slice(what);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A field key: number and wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_key(out, field, 0);
    put_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn put_string(out: &mut Vec<u8>, field: u32, s: &str) {
    put_bytes(out, field, s.as_bytes());
}

/// A reader for the tests: TFRecord framing with CRC checks and the Event fields above.
#[cfg(test)]
pub(crate) mod read {
    use anyhow::{bail, ensure, Result};

    #[derive(Debug, Default, PartialEq)]
    pub struct Event {
        pub wall_time: f64,
        pub step: i64,
        pub file_version: Option<String>,
        pub session_start: bool,
        pub scalars: Vec<(String, f32)>,
    }

    pub fn events(bytes: &[u8]) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            ensure!(bytes.len() >= at + 12, "truncated record header at {at}");
            let len_bytes = &bytes[at..at + 8];
            let len = u64::from_le_bytes(len_bytes.try_into()?) as usize;
            ensure!(
                u32le(&bytes[at + 8..]) == super::masked_crc(len_bytes),
                "length CRC"
            );
            let data = bytes
                .get(at + 12..at + 12 + len)
                .ok_or_else(|| anyhow::anyhow!("truncated record at {at}"))?;
            let crc = bytes
                .get(at + 12 + len..at + 16 + len)
                .ok_or_else(|| anyhow::anyhow!("truncated record CRC at {at}"))?;
            ensure!(u32le(crc) == super::masked_crc(data), "data CRC at {at}");
            out.push(event(data)?);
            at += 16 + len;
        }
        Ok(out)
    }

    fn u32le(b: &[u8]) -> u32 {
        u32::from_le_bytes(b[..4].try_into().unwrap())
    }

    /// (field, wire type, varint or fixed value, length-delimited payload)
    type Field<'a> = (u64, u8, u64, &'a [u8]);

    fn fields(mut b: &[u8]) -> Result<Vec<Field<'_>>> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b)?;
            let (field, wire) = (key >> 3, (key & 7) as u8);
            let (v, payload): (u64, &[u8]) = match wire {
                0 => (varint(&mut b)?, &[]),
                1 => {
                    ensure!(b.len() >= 8, "truncated fixed64");
                    let v = u64::from_le_bytes(b[..8].try_into()?);
                    b = &b[8..];
                    (v, &[])
                }
                2 => {
                    let n = varint(&mut b)? as usize;
                    ensure!(b.len() >= n, "truncated bytes field");
                    let (p, rest) = b.split_at(n);
                    b = rest;
                    (0, p)
                }
                5 => {
                    ensure!(b.len() >= 4, "truncated fixed32");
                    let v = u64::from(u32le(b));
                    b = &b[4..];
                    (v, &[])
                }
                w => bail!("unexpected wire type {w}"),
            };
            out.push((field, wire, v, payload));
        }
        Ok(out)
    }

    fn varint(b: &mut &[u8]) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().ok_or_else(|| anyhow::anyhow!("varint"))?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint too long")
    }

    fn event(data: &[u8]) -> Result<Event> {
        let mut e = Event::default();
        for (field, wire, v, p) in fields(data)? {
            match (field, wire) {
                (1, 1) => e.wall_time = f64::from_bits(v),
                (2, 0) => e.step = v as i64,
                (3, 2) => e.file_version = Some(String::from_utf8(p.to_vec())?),
                (5, 2) => {
                    for (f, _, _, value) in fields(p)? {
                        ensure!(f == 1, "Summary field {f}");
                        let (mut tag, mut x) = (String::new(), None);
                        for (f, w, v, p) in fields(value)? {
                            match (f, w) {
                                (1, 2) => tag = String::from_utf8(p.to_vec())?,
                                (2, 5) => x = Some(f32::from_bits(v as u32)),
                                _ => bail!("Summary.Value field {f}"),
                            }
                        }
                        let x = x.ok_or_else(|| anyhow::anyhow!("no simple_value"))?;
                        e.scalars.push((tag, x));
                    }
                }
                (7, 2) => e.session_start = fields(p)? == vec![(1, 0, 1, &[][..])],
                _ => bail!("Event field {field} wire {wire}"),
            }
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_masked_crc_match_references() {
        let mut b = Vec::new();
        put_varint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
        b.clear();
        put_varint(&mut b, (-1i64) as u64);
        assert_eq!(b.len(), 10);
        // CRC-32C check value (RFC 3720) and its TFRecord masking.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(
            masked_crc(b"123456789"),
            0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8)
        );
    }

    #[test]
    fn event_file_parses_back() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let mut w = EventWriter::create(tmp.path(), 11)?;
        let mut w2 = EventWriter::create(tmp.path(), 11)?;
        assert_ne!(w.path(), w2.path(), "a second writer gets its own file");
        w.scalars(
            11,
            1.5e9,
            &[("loss", 0.25), ("lr", 3e-4), ("bad", f64::NAN)],
        )?;
        w.scalars(12, 1.5e9 + 1.0, &[("loss", 0.125)])?;
        w.flush()?;
        w2.flush()?;
        let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let ev = read::events(&std::fs::read(w.path())?)?;
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[0].file_version.as_deref(), Some("brain.Event:2"));
        assert!(ev[1].session_start && ev[1].step == 11);
        assert_eq!((ev[2].step, ev[2].wall_time), (11, 1.5e9));
        assert_eq!(
            ev[2].scalars[..2],
            [("loss".into(), 0.25), ("lr".into(), 3e-4f32)]
        );
        assert!(ev[2].scalars[2].0 == "bad" && ev[2].scalars[2].1.is_nan());
        assert_eq!(ev[3].scalars, [("loss".into(), 0.125)]);

        let mut bytes = std::fs::read(w.path())?;
        let n = bytes.len();
        bytes[n - 7] ^= 1;
        assert!(
            read::events(&bytes).is_err(),
            "a flipped byte fails its CRC"
        );
        Ok(())
    }
}

/// TensorBoard's own reader agrees, purge on resume included. Needs `python3` with the
/// `tensorboard` package (`cargo test -- --ignored tensorboard_reads`); skips without it.
#[cfg(test)]
mod with_tensorboard {
    use super::*;

    const SCRIPT: &str = r#"
import sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0})
acc.Reload()
for tag in sorted(acc.Tags()["scalars"]):
    print(tag, " ".join(f"{e.step}:{e.value:g}" for e in acc.Scalars(tag)))
"#;

    #[test]
    #[ignore = "needs python3 with the tensorboard package"]
    fn tensorboard_reads_our_files() -> Result<()> {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let probe = std::process::Command::new(&python)
            .args(["-c", "import tensorboard"])
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: `{python} -c 'import tensorboard'` failed");
            return Ok(());
        }
        let tmp = tempfile::tempdir()?;
        let mut first = EventWriter::create(tmp.path(), 0)?;
        for s in 1..=5 {
            first.scalars(s, 1e9 + s as f64, &[("loss", s as f64), ("lr", 0.5)])?;
        }
        first.flush()?;
        // Resumed from step 3: steps 4 and 5 are logged again, differently.
        let mut second = EventWriter::create(tmp.path(), 4)?;
        for s in 4..=5 {
            second.scalars(s, 2e9 + s as f64, &[("loss", 10.0 * s as f64)])?;
        }
        second.flush()?;
        let out = std::process::Command::new(&python)
            .args(["-c", SCRIPT])
            .arg(tmp.path())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text, "loss 1:1 2:2 3:3 4:40 5:50\nlr 1:0.5 2:0.5 3:0.5\n");
        Ok(())
    }
}
