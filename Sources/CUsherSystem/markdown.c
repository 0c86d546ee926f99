#include "markdown.h"
#include <cmark-gfm/node.h>
#include <pthread.h>

static pthread_once_t registered = PTHREAD_ONCE_INIT;

static void register_extensions(void) { cmark_gfm_core_extensions_ensure_registered(); }

cmark_node *c_usher_markdown_parse(const char *text, size_t length) {
    pthread_once(&registered, register_extensions);
    cmark_parser *parser = cmark_parser_new(CMARK_OPT_FOOTNOTES | CMARK_OPT_UNSAFE);
    if (parser == NULL) return NULL;
    static const char *const extensions[] = {"table", "strikethrough", "autolink", "tasklist"};
    for (size_t i = 0; i < sizeof extensions / sizeof extensions[0]; i++) {
        cmark_syntax_extension *e = cmark_find_syntax_extension(extensions[i]);
        if (e != NULL) cmark_parser_attach_syntax_extension(parser, e);
    }
    cmark_parser_feed(parser, text, length);
    cmark_node *document = cmark_parser_finish(parser);
    cmark_parser_free(parser);
    return document;
}

cmark_node *c_usher_markdown_footnote_definition(cmark_node *reference) { return reference->parent_footnote_def; }
