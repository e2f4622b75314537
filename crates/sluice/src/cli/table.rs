//! Aligned text tables for people; scripts ask for `--json` instead.

/// `rows` under `headers`, each column as wide as its widest cell, two
/// spaces apart; the last column is not padded.
pub(crate) fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_on_the_widest_cell() {
        let table = super::render(
            &["NAME", "TYPE"],
            &[
                vec!["id".into(), "integer".into()],
                vec!["placed_at".into(), "timestamp".into()],
            ],
        );
        assert_eq!(
            table,
            "NAME       TYPE\nid         integer\nplaced_at  timestamp\n"
        );
    }
}
