package postgres

import (
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/interlockhq/interlock/engine/masking"
)

// copyOut is what the relay must know of a COPY … TO STDOUT to mask its
// rows: the format and, when the statement names them, the columns.
type copyOut struct {
	format masking.CopyFormat
	header bool     // CSV HEADER: the first row holds column names
	cols   []string // the column list; nil when not written (COPY t, COPY (query))
	rel    string   // the table, as a quoted regclass literal; "" for COPY (query)
}

// parseCopyOut reads the options of a COPY … TO STDOUT statement. binary
// reports FORMAT binary, whose values the relay cannot mask.
func parseCopyOut(sql string) (co *copyOut, binary bool, err error) {
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return nil, false, err
	}
	if len(tree.Stmts) != 1 || tree.Stmts[0].Stmt.GetCopyStmt() == nil {
		return nil, false, fmt.Errorf("not a single COPY statement")
	}
	cs := tree.Stmts[0].Stmt.GetCopyStmt()
	co = &copyOut{format: masking.TextCopy()}
	if r := cs.GetRelation(); r != nil {
		co.rel = regclassIdent(r.GetRelname())
		if r.GetSchemaname() != "" {
			co.rel = regclassIdent(r.GetSchemaname()) + "." + co.rel
		}
	}
	for _, n := range cs.GetAttlist() {
		co.cols = append(co.cols, n.GetString_().GetSval())
	}
	var delim, null, quote, escape *string
	for _, o := range cs.GetOptions() {
		de := o.GetDefElem()
		if de == nil {
			continue
		}
		arg := defString(de.GetArg())
		switch strings.ToLower(de.GetDefname()) {
		case "format":
			switch strings.ToLower(arg) {
			case "csv":
				co.format = masking.CSVCopy()
			case "binary":
				return nil, true, nil
			case "text":
			default:
				return nil, false, fmt.Errorf("COPY format %q", arg)
			}
		case "header":
			co.header = de.GetArg() == nil || !isFalse(arg)
		case "delimiter":
			delim = &arg
		case "null":
			null = &arg
		case "quote":
			quote = &arg
		case "escape":
			escape = &arg
		}
	}
	// Options apply after the format is known, whatever their order.
	if delim != nil {
		if len(*delim) != 1 {
			return nil, false, fmt.Errorf("COPY delimiter %q", *delim)
		}
		co.format.Delimiter = (*delim)[0]
	}
	if null != nil {
		co.format.Null = *null
	}
	if quote != nil && len(*quote) == 1 {
		co.format.Quote = (*quote)[0]
		co.format.Escape = co.format.Quote
	}
	if escape != nil && len(*escape) == 1 {
		co.format.Escape = (*escape)[0]
	}
	if err := co.format.CheckAndSetDefaults(); err != nil {
		return nil, false, err
	}
	return co, false, nil
}

func defString(n *pg_query.Node) string {
	switch {
	case n == nil:
		return ""
	case n.GetString_() != nil:
		return n.GetString_().GetSval()
	case n.GetBoolean() != nil:
		if n.GetBoolean().GetBoolval() {
			return "true"
		}
		return "false"
	case n.GetInteger() != nil:
		return fmt.Sprint(n.GetInteger().GetIval())
	}
	return ""
}

func regclassIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func isFalse(s string) bool {
	switch strings.ToLower(s) {
	case "false", "off", "0", "no":
		return true
	}
	return false
}

// copyPlans builds the plans for the n columns of a CopyOutResponse.
// Columns of COPY t [(cols)] are named "schema.table.column" from the
// catalog (all of the table's columns when none are listed); when the
// catalog cannot say, listed columns are named "..<name>" like unresolved
// RowDescription columns. Unnamed columns (COPY (query)) get detectors only,
// which the statement was allowed for only when the mask has no column
// rules (see copyCheck).
func (ms *maskState) copyPlans(m *masking.Masker, co *copyOut, n int) ([]masking.Plan, error) {
	names := make([]string, n)
	switch {
	case co.rel != "":
		tbl, cols, ok := ms.cat.relation(co.rel)
		switch {
		case ok && co.cols == nil:
			if len(cols) != n {
				return nil, fmt.Errorf("masking: COPY of %s: the catalog has %d columns, the server sends %d", co.rel, len(cols), n)
			}
			for i := range names {
				names[i] = tbl + "." + cols[i]
			}
		case co.cols == nil:
			if len(m.Spec().Columns) > 0 {
				return nil, fmt.Errorf("masking: COPY of %s: the columns are unknown (catalog unavailable) and the mask has column rules", co.rel)
			}
		default:
			if len(co.cols) != n {
				return nil, fmt.Errorf("masking: COPY names %d columns, the server sends %d", len(co.cols), n)
			}
			if !ok && ms.cat != nil && !ms.cat.passthrough() && len(m.Spec().Columns) > 0 {
				// The catalog failed (an agent can make it fail): rules
				// naming the table would not match "..<column>".
				return nil, fmt.Errorf("masking: COPY of %s: the catalog is unavailable and the mask has column rules", co.rel)
			}
			prefix := ".."
			if ok {
				prefix = tbl + "."
			}
			for i := range names {
				names[i] = prefix + co.cols[i]
			}
		}
	case co.cols != nil:
		return nil, fmt.Errorf("masking: COPY (query) with a column list")
	}
	cols := make([]masking.Column, n)
	for i := range cols {
		// COPY output is text; there is no column type to keep valid.
		cols[i] = masking.Column{Name: names[i], TypeOID: masking.OIDText}
	}
	return m.Plan(cols), nil
}
