#ifndef C_USHER_MARKDOWN_H
#define C_USHER_MARKDOWN_H

#include <stddef.h>
#include <cmark-gfm.h>
#include <cmark-gfm-core-extensions.h>

/// Parses CommonMark with GitHub's extensions (tables, strikethrough, autolinks, task lists) and footnotes, raw
/// HTML kept. Returns the document node (free with cmark_node_free), or NULL when out of memory.
cmark_node *c_usher_markdown_parse(const char *text, size_t length);

/// The definition a footnote reference points at (NULL when it has none).
cmark_node *c_usher_markdown_footnote_definition(cmark_node *reference);

#endif
