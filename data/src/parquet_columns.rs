//! Typed read access to the arrow columns of a parquet shard (used by [`crate::parquet_read`]):
//! the data-type checks behind the accepted `image`/`style_id`/`prompt`/`content_id` types
//! (convention in [`crate::hf`]), column lookup by name, any integer column widened to i64,
//! and one accessor each over the three arrow string layouts (Utf8, LargeUtf8, Utf8View) and
//! the three binary layouts (Binary, LargeBinary, BinaryView).

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef};

use crate::hf::type_name;

pub(crate) fn column_names(schema: &SchemaRef) -> String {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

pub(crate) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a ArrayRef> {
    batch.column_by_name(name)
}

pub(crate) fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

pub(crate) fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

pub(crate) fn is_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

/// Any integer column as i64 values; u64 above i64::MAX is an error naming the value.
pub(crate) fn integers(array: &ArrayRef) -> Result<Vec<Option<i64>>, String> {
    fn widen<T: arrow_array::ArrowPrimitiveType>(array: &ArrayRef) -> Vec<Option<i64>>
    where
        T::Native: Into<i64>,
    {
        array
            .as_primitive::<T>()
            .iter()
            .map(|v| v.map(Into::into))
            .collect()
    }
    Ok(match array.data_type() {
        DataType::Int8 => widen::<Int8Type>(array),
        DataType::Int16 => widen::<Int16Type>(array),
        DataType::Int32 => widen::<Int32Type>(array),
        DataType::Int64 => widen::<Int64Type>(array),
        DataType::UInt8 => widen::<UInt8Type>(array),
        DataType::UInt16 => widen::<UInt16Type>(array),
        DataType::UInt32 => widen::<UInt32Type>(array),
        DataType::UInt64 => {
            let mut out = Vec::with_capacity(array.len());
            for v in array.as_primitive::<UInt64Type>().iter() {
                out.push(match v {
                    Some(v) => Some(
                        i64::try_from(v).map_err(|_| format!("value {v} does not fit in int64"))?,
                    ),
                    None => None,
                });
            }
            out
        }
        other => {
            return Err(format!(
                "expected an integer column, found {}",
                type_name(other)
            ))
        }
    })
}

/// Read access to any of the three arrow string layouts.
pub(crate) enum StringColumn<'a> {
    Utf8(&'a arrow_array::StringArray),
    Large(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
}

impl<'a> StringColumn<'a> {
    pub(crate) fn new(array: &'a ArrayRef) -> Option<Self> {
        match array.data_type() {
            DataType::Utf8 => Some(StringColumn::Utf8(array.as_string::<i32>())),
            DataType::LargeUtf8 => Some(StringColumn::Large(array.as_string::<i64>())),
            DataType::Utf8View => Some(StringColumn::View(array.as_string_view())),
            _ => None,
        }
    }

    /// The value at `i`, None when null.
    pub(crate) fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            StringColumn::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            StringColumn::Large(a) => a.is_valid(i).then(|| a.value(i)),
            StringColumn::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// Read access to any of the three arrow binary layouts.
pub(crate) enum BinaryColumn<'a> {
    Binary(&'a arrow_array::BinaryArray),
    Large(&'a arrow_array::LargeBinaryArray),
    View(&'a arrow_array::BinaryViewArray),
}

impl<'a> BinaryColumn<'a> {
    pub(crate) fn new(array: &'a ArrayRef) -> Option<Self> {
        match array.data_type() {
            DataType::Binary => Some(BinaryColumn::Binary(array.as_binary::<i32>())),
            DataType::LargeBinary => Some(BinaryColumn::Large(array.as_binary::<i64>())),
            DataType::BinaryView => Some(BinaryColumn::View(array.as_binary_view())),
            _ => None,
        }
    }

    /// The value at `i`, None when null.
    pub(crate) fn get(&self, i: usize) -> Option<&'a [u8]> {
        match self {
            BinaryColumn::Binary(a) => a.is_valid(i).then(|| a.value(i)),
            BinaryColumn::Large(a) => a.is_valid(i).then(|| a.value(i)),
            BinaryColumn::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}
