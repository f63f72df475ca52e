//! Plain-text tables and the few formats the CLI's tables share (times, ages, optional
//! values), so every command prints alike.

use crate::db::At;

pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>| {
            let last = cells.len().saturating_sub(1);
            let mut out = String::new();
            for (i, cell) in cells.into_iter().enumerate() {
                out.push_str(cell);
                if i < last {
                    let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = line(self.headers.clone());
        for row in &self.rows {
            out.push('\n');
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }

    pub fn print(&self) {
        println!("{}", self.render());
    }
}

/// `2026-11-26 14:30:05` (UTC), the precision a person reads.
pub fn at(t: &At) -> String {
    t.0.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn opt_at(t: &Option<At>) -> String {
    t.as_ref().map(at).unwrap_or_else(|| "-".into())
}

pub fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".into())
}

/// `45s`, `12m`, `3h05m`, `2d04h`.
pub fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Shortens free text (errors, reasons) to one table cell.
pub fn cell(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_the_last_is_not_padded() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide cell".into(), "x".into()]);
        assert_eq!(t.render(), "A          LONGER\nwide cell  x");
    }

    #[test]
    fn ages_and_cells_are_short() {
        assert_eq!(age(5.0), "5s");
        assert_eq!(age(125.0), "2m");
        assert_eq!(age(3.0 * 3600.0 + 300.0), "3h05m");
        assert_eq!(age(2.0 * 86_400.0 + 3600.0 * 4.0), "2d04h");
        assert_eq!(cell("abcdef", 4), "abc…");
        assert_eq!(cell("a\nb", 10), "a b");
    }
}
