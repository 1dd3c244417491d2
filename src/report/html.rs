//! The report page: one self-contained, well-formed (X)HTML document with the charts' SVG
//! inline, a small stylesheet, no scripts and nothing fetched from anywhere.

use crate::terminal::printable;

/// A titled table of name/value rows in the header.
pub struct Section {
    pub title: String,
    pub rows: Vec<(String, String)>,
}

/// A chart: its SVG (from [`super::charts`]) under an id tests and links can name.
pub struct Figure {
    pub id: String,
    pub svg: String,
    /// A line under the chart saying what it shows.
    pub note: String,
}

/// A table under the charts (per-class figures).
pub struct Table {
    pub id: String,
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

pub struct Page {
    pub title: String,
    pub status: String,
    pub sections: Vec<Section>,
    pub figures: Vec<Figure>,
    pub tables: Vec<Table>,
}

/// `text` safe inside an element or a quoted attribute. Control characters (which XML
/// forbids) and bidirectional overrides are shown escaped, as on the terminal: label names and
/// file names come from files other people made.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in printable(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 1.5rem auto;
  max-width: 1240px; padding: 0 1rem; color: #222; background: #fafafa; }
h1 { font-size: 1.5rem; margin: 0 0 .2rem; }
h2 { font-size: 1rem; margin: 0 0 .4rem; color: #444; }
.status { margin: 0 0 1rem; color: #555; }
.sections { display: grid; grid-template-columns: repeat(auto-fit, minmax(270px, 1fr)); gap: .8rem;
  margin-bottom: 1rem; }
.sections section, figure, .tables section { background: #fff; border: 1px solid #ddd;
  border-radius: 6px; padding: .6rem .8rem; margin: 0; }
table { border-collapse: collapse; font-size: .85rem; width: 100%; }
th, td { text-align: left; padding: .15rem .5rem .15rem 0; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.sections th { color: #666; font-weight: normal; white-space: nowrap; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: .8rem; }
figure svg { width: 100%; height: auto; }
figcaption { font-size: .8rem; color: #666; }
.tables { margin-top: 1rem; }
";

/// The whole document.
pub fn render(page: &Page) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\" xmlns=\"http://www.w3.org/1999/xhtml\">\n");
    out.push_str("<head>\n<meta charset=\"utf-8\"/>\n");
    out.push_str(
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<title>",
    );
    out.push_str(&escape(&page.title));
    out.push_str("</title>\n<style>");
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<h1>");
    out.push_str(&escape(&page.title));
    out.push_str("</h1>\n<p class=\"status\">");
    out.push_str(&escape(&page.status));
    out.push_str("</p>\n<div class=\"sections\">\n");
    for section in &page.sections {
        out.push_str("<section>\n<h2>");
        out.push_str(&escape(&section.title));
        out.push_str("</h2>\n<table>\n");
        for (name, value) in &section.rows {
            out.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>\n",
                escape(name),
                escape(value)
            ));
        }
        out.push_str("</table>\n</section>\n");
    }
    out.push_str("</div>\n<div class=\"charts\">\n");
    for figure in &page.figures {
        out.push_str(&format!("<figure id=\"{}\">\n", escape(&figure.id)));
        // plotters' SVG backend escapes the text it writes (titles, tick labels).
        out.push_str(&figure.svg);
        out.push_str(&format!(
            "<figcaption>{}</figcaption>\n</figure>\n",
            escape(&figure.note)
        ));
    }
    out.push_str("</div>\n<div class=\"tables\">\n");
    for table in &page.tables {
        out.push_str(&format!(
            "<section id=\"{}\">\n<h2>{}</h2>\n<table>\n<tr>",
            escape(&table.id),
            escape(&table.title)
        ));
        for (i, h) in table.header.iter().enumerate() {
            let class = if i == 0 { "" } else { " class=\"num\"" };
            out.push_str(&format!("<th{class}>{}</th>", escape(h)));
        }
        out.push_str("</tr>\n");
        for row in &table.rows {
            out.push_str("<tr>");
            for (i, cell) in row.iter().enumerate() {
                let class = if i == 0 { "" } else { " class=\"num\"" };
                out.push_str(&format!("<td{class}>{}</td>", escape(cell)));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n</section>\n");
    }
    out.push_str("</div>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_is_escaped() {
        assert_eq!(escape("<b>&\"'\u{1b}"), "&lt;b&gt;&amp;&quot;&#39;\\u{1b}");
    }
}
