package postgres

import "errors"

// ErrParseTree is returned (wrapped) by Classifier.Classify when libpg_query's
// output cannot be decoded. It is an internal failure, never a verdict on the
// agent's SQL (a query the parser rejects is an Unclassified statement), and
// the caller must block the query all the same.
var ErrParseTree = errors.New("malformed parse tree")
