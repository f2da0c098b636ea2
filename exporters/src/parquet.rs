//! Parquet history: tables of the ledger written as Parquet files for Spark, Trino, DuckDB and
//! pyarrow, partitioned the Hive way (`TABLE/site=S/date=YYYY-MM-DD/part-0.parquet`; readers
//! take `site` and `date` from the path). The aggregator fills the columns
//! (`footprint_aggregator::parquet_history`); this writes them.
//!
//! Encodings are chosen per column: times and counters (`Column::Int`, `Column::Time`) are
//! DELTA_BINARY_PACKED, so a regular sampling interval or a steady power costs next to nothing
//! before compression; text is dictionary-encoded (a meter's name repeats on each of its rows);
//! every page is then zstd-compressed. A file is written beside its final name and renamed, so
//! a reader never sees half a file and a failed write leaves the previous one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

/// Why a table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Encode { path: PathBuf, reason: String },
    #[error("column {column}: {rows} rows where the table has {expected}")]
    Ragged {
        column: String,
        rows: usize,
        expected: usize,
    },
}

/// One column of a table, with its values.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    /// Text, dictionary-encoded.
    Text(String, Vec<String>),
    /// Integers (counters, figures in mJ, mL, mg, ns), delta-encoded; `None` is null.
    Int(String, Vec<Option<i64>>),
    /// Instants, ns since the epoch, UTC, delta-encoded; `None` is null.
    Time(String, Vec<Option<i64>>),
}

impl Column {
    fn name(&self) -> &str {
        match self {
            Self::Text(name, _) | Self::Int(name, _) | Self::Time(name, _) => name,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Text(_, values) => values.len(),
            Self::Int(_, values) | Self::Time(_, values) => values.len(),
        }
    }

    fn field(&self) -> Field {
        let (kind, nullable) = match self {
            Self::Text(..) => (DataType::Utf8, false),
            Self::Int(_, values) => (DataType::Int64, values.iter().any(Option::is_none)),
            Self::Time(_, values) => (
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                values.iter().any(Option::is_none),
            ),
        };
        Field::new(self.name(), kind, nullable)
    }

    fn array(&self) -> ArrayRef {
        match self {
            Self::Text(_, values) => Arc::new(StringArray::from_iter_values(values)),
            Self::Int(_, values) => Arc::new(Int64Array::from(values.clone())),
            Self::Time(_, values) => {
                Arc::new(TimestampNanosecondArray::from(values.clone()).with_timezone("UTC"))
            }
        }
    }
}

/// Where a table's partition goes: `DIR/TABLE/site=SITE/date=DATE/part-0.parquet`.
pub fn partition_path(dir: &Path, table: &str, site: &str, date: &str) -> PathBuf {
    dir.join(table)
        .join(format!("site={site}"))
        .join(format!("date={date}"))
        .join("part-0.parquet")
}

/// Writes `columns` (all of one length) as the Parquet file `path`, replacing one there; the
/// bytes written.
///
/// # Errors
/// [`ParquetError`] naming the file, or the column of a different length.
pub fn write_table(path: &Path, columns: &[Column]) -> Result<u64, ParquetError> {
    let rows = columns.first().map_or(0, Column::len);
    if let Some(ragged) = columns.iter().find(|c| c.len() != rows) {
        return Err(ParquetError::Ragged {
            column: ragged.name().to_owned(),
            rows: ragged.len(),
            expected: rows,
        });
    }
    let io = |source| ParquetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let encode = |reason: String| ParquetError::Encode {
        path: path.to_path_buf(),
        reason,
    };
    let schema = Arc::new(Schema::new(
        columns.iter().map(Column::field).collect::<Vec<_>>(),
    ));
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_created_by(format!("footprint {}", env!("CARGO_PKG_VERSION")));
    for column in columns {
        if !matches!(column, Column::Text(..)) {
            let path = ColumnPath::from(column.name());
            properties = properties
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
        }
    }
    let batch = RecordBatch::try_new(schema.clone(), columns.iter().map(Column::array).collect())
        .map_err(|e| encode(e.to_string()))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let partial = path.with_extension("parquet.partial");
    let file = std::fs::File::create(&partial).map_err(io)?;
    let written = (|| {
        let mut writer = ArrowWriter::try_new(file, schema, Some(properties.build()))
            .map_err(|e| encode(e.to_string()))?;
        writer.write(&batch).map_err(|e| encode(e.to_string()))?;
        let file = writer.into_inner().map_err(|e| encode(e.to_string()))?;
        file.sync_all().map_err(io)?;
        Ok::<_, ParquetError>(())
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    std::fs::rename(&partial, path).map_err(io)?;
    Ok(std::fs::metadata(path).map_err(io)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn a_table_round_trips_with_its_types_and_encodings() {
        let dir = tempfile::tempdir().unwrap();
        let path = partition_path(dir.path(), "readings", "s1", "2023-11-06");
        let rows = 10_000;
        let columns = vec![
            Column::Text("meter".into(), vec!["gpu0".to_owned(); rows]),
            Column::Time(
                "ts".into(),
                (0..rows as i64).map(|i| Some(i * 5_000_000_000)).collect(),
            ),
            Column::Int(
                "value".into(),
                (0..rows as i64)
                    .map(|i| Some(1_000_000 + i * 1_750))
                    .collect(),
            ),
            Column::Int(
                "delta".into(),
                (0..rows).map(|i| (i % 1000 == 0).then_some(7)).collect(),
            ),
        ];
        let bytes = write_table(&path, &columns).unwrap();
        // Regular times and a steady counter: well under a byte a row.
        assert!(bytes < rows as u64, "{bytes} bytes for {rows} rows");
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let metadata = reader.metadata();
        assert_eq!(metadata.file_metadata().num_rows(), rows as i64);
        let row_group = metadata.row_group(0);
        let encodings = |index: usize| row_group.column(index).encodings().collect::<Vec<_>>();
        assert!(encodings(1).contains(&Encoding::DELTA_BINARY_PACKED));
        assert!(encodings(2).contains(&Encoding::DELTA_BINARY_PACKED));
        assert!(
            encodings(0).contains(&Encoding::RLE_DICTIONARY)
                || encodings(0).contains(&Encoding::PLAIN_DICTIONARY)
        );
        assert!(!path.with_extension("parquet.partial").exists());
    }

    #[test]
    fn columns_of_different_lengths_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let error = write_table(
            &path,
            &[
                Column::Int("a".into(), vec![Some(1), Some(2)]),
                Column::Int("b".into(), vec![Some(1)]),
            ],
        )
        .unwrap_err();
        assert!(error.to_string().contains("column b"), "{error}");
        assert!(!path.exists());
    }
}
