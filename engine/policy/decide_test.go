package policy

import (
	"strings"
	"testing"
)

const testPolicy = `
version: 1
targets:
  - name: db
    protocol: postgres
    address: 127.0.0.1:5432
    auth: passthrough
  - name: db2
    protocol: postgres
    address: db2.internal:5432
    auth: passthrough
  - name: api
    protocol: tcp
    address: "[::1]:8080"
agents:
  - name: reader
    roles: [reader]
  - name: writer
    roles: [writer]
  - name: auditor
    roles: [auditor]
  - name: nobody
roles:
  - name: base
    rules:
      - id: base-tx
        actions: [transaction]
        decision: allow
  - name: reader
    inherits: [base]
    rules:
      - id: reader-read
        targets: [db]
        actions: [read]
        tables: ["public.*", "pg_catalog.*"]
        decision: allow
      - id: reader-fn
        targets: [db]
        functions: [public.safe_fn]
        decision: allow
      - id: reader-xml
        targets: [db]
        function_categories: [dynamic_sql]
        decision: allow
      - id: reader-sales-schema
        targets: ["db*"]
        actions: [select]
        schemas: ["sales"]
        decision: allow
  - name: writer
    inherits: [reader]
    rules:
      - id: writer-write
        targets: [db]
        actions: [insert, update, delete]
        tables: ["public.*"]
        decision: allow
      - id: writer-big-delete
        targets: [db]
        actions: [delete]
        when: {row_estimate_over: 1000}
        decision: approve
        approval: {approvers: [dba], timeout: 30s}
      - id: writer-delete-in-tx
        targets: [db]
        actions: [delete]
        tables: [public.ledger]
        when: {in_transaction: true}
        decision: approve
        approval: {approvers: [dba, lead], timeout: 2m, in_transaction_timeout: 5s, on_timeout_in_transaction: terminate}
      - id: writer-where
        actions: [update, delete]
        when: {has_where: false}
        decision: block
        message: need a WHERE
  - name: auditor
    rules:
      - id: auditor-mask-email
        targets: [db]
        actions: [select]
        tables: [public.customers]
        decision: mask
        mask: {columns: {email: partial, "*.ssn": hash}, detectors: [card]}
      - id: auditor-mask-ssn
        targets: [db]
        actions: [select]
        tables: ["public.*"]
        decision: mask
        mask: {columns: {"*.ssn": redact}, detectors: [card, email], masker: hash}
      - id: auditor-api
        targets: [api]
        actions: [GET]
        paths: ["/v1/**"]
        decision: allow
rules:
  - id: no-drop
    actions: [dangerous]
    decision: block
    message: dangerous
  - id: no-secrets
    actions: [all]
    tables: ["secret.*"]
    schemas: [secret]
    decision: block
`

func mustParse(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func table(name string, a Action) Object { return Object{Kind: KindTable, Name: name, Action: a} }
func fn(name string) Object {
	return Object{Kind: KindFunction, Name: name, Action: ActionExecute, Category: CategoryOf(name)}
}

func TestDecide(t *testing.T) {
	p := mustParse(t, testPolicy)
	type tc struct {
		name    string
		agent   string
		target  string
		action  Action
		objects []Object
		attrs   Attributes
		want    Verdict
		rule    string
	}
	where := Attributes{HasWhere: true, RowEstimate: -1}
	tests := []tc{
		// Default block.
		{"agent without roles", "nobody", "db", ActionSelect, []Object{table("public.t", ActionSelect)}, where, VerdictBlock, RuleDefaultDeny},
		{"unknown agent", "ghost", "db", ActionSelect, []Object{table("public.t", ActionSelect)}, where, VerdictBlock, RuleDefaultDeny},
		{"unknown target", "reader", "nope", ActionSelect, []Object{table("public.t", ActionSelect)}, where, VerdictBlock, RuleUnknownTarget},
		{"unknown action", "reader", "db", ActionUnknown, nil, where, VerdictBlock, RuleDefaultDeny},
		{"reader cannot write", "reader", "db", ActionInsert, []Object{table("public.t", ActionInsert)}, where, VerdictBlock, RuleDefaultDeny},
		{"reader target scope", "reader", "db2", ActionSelect, []Object{table("public.t", ActionSelect)}, where, VerdictBlock, RuleDefaultDeny},

		// Allow and inheritance.
		{"reader reads", "reader", "db", ActionSelect, []Object{table("public.t", ActionSelect)}, where, VerdictAllow, "reader-read"},
		{"inherited base rule", "reader", "db", ActionBegin, nil, where, VerdictAllow, "base-tx"},
		{"two levels of inheritance", "writer", "db2", ActionCommit, nil, where, VerdictAllow, "base-tx"},
		{"writer inherits reader", "writer", "db", ActionSelect, []Object{table("public.t", ActionSelect)}, where, VerdictAllow, "reader-read"},

		// Object coverage.
		{"mixed objects all covered", "writer", "db", ActionUpdate, []Object{table("public.a", ActionUpdate), table("public.b", ActionSelect)}, where, VerdictAllow, "reader-read"},
		{"mixed objects one uncovered", "reader", "db", ActionUpdate, []Object{table("public.a", ActionUpdate), table("public.b", ActionSelect)}, where, VerdictBlock, RuleDefaultDeny},
		{"write outside glob", "writer", "db", ActionInsert, []Object{table("audit.log", ActionInsert)}, where, VerdictBlock, RuleDefaultDeny},
		{"schema selector covers tables", "reader", "db2", ActionSelect, []Object{table("sales.q1", ActionSelect)}, where, VerdictAllow, "reader-sales-schema"},
		{"schema selector covers schema objects", "reader", "db", ActionSelect, []Object{{Kind: KindSchema, Name: "sales", Action: ActionSelect}}, where, VerdictAllow, "reader-sales-schema"},
		{"schema selector is exact", "reader", "db2", ActionSelect, []Object{table("salesx.q1", ActionSelect)}, where, VerdictBlock, RuleDefaultDeny},

		// Functions.
		{"built-in implicitly covered", "reader", "db", ActionSelect, []Object{table("public.t", ActionSelect), fn("pg_catalog.lower")}, where, VerdictAllow, "reader-read"},
		{"only built-ins judged on statement", "reader", "db", ActionSelect, []Object{fn("pg_catalog.now")}, where, VerdictAllow, "reader-read"},
		{"no objects: allow rule selectors ignored", "reader", "db", ActionSelect, nil, where, VerdictAllow, "reader-read"},
		{"no objects: action still needed", "reader", "db", ActionInsert, nil, where, VerdictBlock, RuleDefaultDeny},
		{"no objects: selector-less rule of another target", "reader", "db2", ActionExplain, nil, where, VerdictBlock, RuleDefaultDeny},
		{"no objects: block with selectors does not apply", "writer", "db", ActionSelect, nil, where, VerdictAllow, "reader-read"},
		{"no objects: mask with selectors does not apply", "auditor", "db", ActionSelect, nil, where, VerdictBlock, RuleDefaultDeny},
		{"only built-ins, statement allowed", "reader", "db", ActionBegin, []Object{fn("pg_catalog.now")}, where, VerdictAllow, "base-tx"},
		{"user function needs a rule", "reader", "db", ActionSelect, []Object{table("public.t", ActionSelect), fn("public.other_fn")}, where, VerdictBlock, RuleDefaultDeny},
		{"user function by name", "reader", "db", ActionSelect, []Object{table("public.t", ActionSelect), fn("public.safe_fn")}, where, VerdictAllow, "reader-read"},
		{"built-in name outside pg_catalog", "reader", "db", ActionSelect, []Object{table("public.t", ActionSelect), fn("public.lower")}, where, VerdictBlock, RuleDefaultDeny},
		{"category blocked by dangerous", "writer", "db", ActionSelect, []Object{table("public.t", ActionSelect), fn("pg_catalog.pg_read_file")}, where, VerdictBlock, "no-drop"},
		{"dangerous beats category allow", "reader", "db", ActionSelect, []Object{fn("pg_catalog.query_to_xml")}, where, VerdictBlock, "no-drop"},

		// Precedence.
		{"block beats allow", "writer", "db", ActionDrop, []Object{table("public.t", ActionDrop)}, where, VerdictBlock, "no-drop"},
		{"block on any object", "writer", "db", ActionSelect, []Object{table("public.t", ActionSelect), table("secret.keys", ActionSelect)}, where, VerdictBlock, "no-secrets"},
		{"block by schema shorthand", "writer", "db", ActionSelect, []Object{table("secret.keys", ActionSelect)}, where, VerdictBlock, "no-secrets"},
		{"approve beats allow", "writer", "db", ActionDelete, []Object{table("public.t", ActionDelete)}, Attributes{HasWhere: true, RowEstimate: 5000}, VerdictApprove, "writer-big-delete"},
		{"small delete allowed", "writer", "db", ActionDelete, []Object{table("public.t", ActionDelete)}, Attributes{HasWhere: true, RowEstimate: 10}, VerdictAllow, "writer-write"},
		{"unknown estimate approves", "writer", "db", ActionDelete, []Object{table("public.t", ActionDelete)}, where, VerdictApprove, "writer-big-delete"},
		{"block beats approve", "writer", "db", ActionDelete, []Object{table("public.t", ActionDelete)}, Attributes{RowEstimate: 5000}, VerdictBlock, "writer-where"},
		{"first approve rule in file order", "writer", "db", ActionDelete, []Object{table("public.ledger", ActionDelete)}, Attributes{HasWhere: true, InTransaction: true, RowEstimate: -1}, VerdictApprove, "writer-big-delete"},
		{"in-transaction approval", "writer", "db", ActionDelete, []Object{table("public.ledger", ActionDelete)}, Attributes{HasWhere: true, InTransaction: true, RowEstimate: 1}, VerdictApprove, "writer-delete-in-tx"},
		{"not in transaction", "writer", "db", ActionDelete, []Object{table("public.ledger", ActionDelete)}, Attributes{HasWhere: true, RowEstimate: 1}, VerdictAllow, "writer-write"},

		// Statement pass: block rules without selectors see the statement action.
		{"copy program with select object", "reader", "db", ActionCopyToProgram, []Object{table("public.t", ActionSelect)}, where, VerdictBlock, "no-drop"},
		{"do block without objects", "writer", "db", ActionDo, nil, where, VerdictBlock, "no-drop"},
		{"set role with role object", "writer", "db", ActionSetRole, []Object{{Kind: KindRole, Name: "postgres", Action: ActionSetRole}}, where, VerdictBlock, "no-drop"},

		// Masks.
		{"mask beats allow", "auditor", "db", ActionSelect, []Object{table("public.customers", ActionSelect)}, where, VerdictMask, "auditor-mask-email"},
		{"mask covers", "auditor", "db", ActionSelect, []Object{table("public.orders", ActionSelect)}, where, VerdictMask, "auditor-mask-ssn"},

		// Paths.
		{"path glob", "auditor", "api", ActionHTTPGet, []Object{{Kind: KindPath, Name: "/v1/users/1", Action: ActionHTTPGet}}, where, VerdictAllow, "auditor-api"},
		{"path outside glob", "auditor", "api", ActionHTTPGet, []Object{{Kind: KindPath, Name: "/admin", Action: ActionHTTPGet}}, where, VerdictBlock, RuleDefaultDeny},
		{"method not allowed", "auditor", "api", ActionHTTPPost, []Object{{Kind: KindPath, Name: "/v1/users", Action: ActionHTTPPost}}, where, VerdictBlock, RuleDefaultDeny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := &Operation{Agent: tt.agent, Roles: p.AgentRoles(tt.agent), Target: tt.target, Action: tt.action, Objects: tt.objects, Attrs: tt.attrs}
			d := p.Decide(op)
			if d.Verdict != tt.want || d.RuleID != tt.rule {
				t.Errorf("Decide = %s by %s (%s), want %s by %s", d.Verdict, d.RuleID, d.Reason(), tt.want, tt.rule)
			}
			// Explain must agree with Decide and list the deciding rule.
			ex := p.Explain(op)
			if ex.Decision.Verdict != d.Verdict || ex.Decision.RuleID != d.RuleID {
				t.Errorf("Explain decision %s/%s differs from Decide", ex.Decision.Verdict, ex.Decision.RuleID)
			}
			if _, isRule := p.Rule(d.RuleID); isRule && !explained(ex, d.RuleID) {
				t.Errorf("Explain does not list the deciding rule %s", d.RuleID)
			}
		})
	}
}

func explained(ex Explanation, id string) bool {
	for _, o := range ex.Objects {
		for _, m := range o.Matches {
			if m.ID == id {
				return true
			}
		}
	}
	return false
}

func TestDecideSpecialCases(t *testing.T) {
	p := mustParse(t, testPolicy)

	var zero Decision
	if zero.Verdict != VerdictBlock {
		t.Fatal("the zero Decision must block")
	}
	if d := p.Decide(nil); d.Verdict != VerdictBlock {
		t.Fatal("Decide(nil) does not block")
	}

	d := p.Decide(&Operation{Agent: "writer", Target: "db", Unclassified: true, Reason: "syntax error at or near x"})
	if d.Verdict != VerdictBlock || d.RuleID != RuleUnclassified || d.Message != "syntax error at or near x" {
		t.Errorf("unclassified: %+v", d)
	}
	if !strings.Contains(d.Reason(), "syntax error") {
		t.Errorf("Reason() = %q", d.Reason())
	}

	// Nil Roles: looked up from the agent.
	d = p.Decide(&Operation{Agent: "reader", Target: "db", Action: ActionSelect, Objects: []Object{table("public.t", ActionSelect)}})
	if d.Verdict != VerdictAllow {
		t.Errorf("nil roles: %s by %s", d.Verdict, d.RuleID)
	}
	// Empty, non-nil Roles: only global rules.
	d = p.Decide(&Operation{Agent: "reader", Roles: []string{}, Target: "db", Action: ActionSelect, Objects: []Object{table("public.t", ActionSelect)}})
	if d.Verdict != VerdictBlock {
		t.Errorf("empty roles: %s by %s", d.Verdict, d.RuleID)
	}

	// The block names the object and the message.
	d = p.Decide(&Operation{Agent: "writer", Target: "db", Action: ActionUpdate, Objects: []Object{table("public.t", ActionUpdate)}, Attrs: Attributes{RowEstimate: -1}})
	if d.RuleID != "writer-where" || d.Object.Name != "public.t" || d.Reason() != "block by rule writer-where (update on table public.t): need a WHERE" {
		t.Errorf("block reason: %+v %q", d, d.Reason())
	}
	d = p.Decide(&Operation{Agent: "reader", Target: "db", Action: ActionInsert, Objects: []Object{table("public.t", ActionInsert)}})
	if d.Reason() != "no rule allows insert on table public.t" {
		t.Errorf("default-deny reason: %q", d.Reason())
	}

	// Approval settings.
	d = p.Decide(&Operation{Agent: "writer", Target: "db", Action: ActionDelete, Objects: []Object{table("public.ledger", ActionDelete)}, Attrs: Attributes{HasWhere: true, InTransaction: true, RowEstimate: 3}})
	want := Approval{Approvers: []string{"dba", "lead"}, Timeout: 120e9, InTransactionTimeout: 5e9, OnTimeoutInTransaction: TxTerminate}
	if d.Approval == nil || strings.Join(d.Approval.Approvers, ",") != "dba,lead" || d.Approval.Timeout != want.Timeout ||
		d.Approval.InTransactionTimeout != want.InTransactionTimeout || d.Approval.OnTimeoutInTransaction != TxTerminate {
		t.Errorf("approval = %+v", d.Approval)
	}
	d = p.Decide(&Operation{Agent: "writer", Target: "db", Action: ActionDelete, Objects: []Object{table("public.t", ActionDelete)}, Attrs: Attributes{HasWhere: true, RowEstimate: 5000}})
	if d.Approval == nil || d.Approval.InTransactionTimeout != DefaultInTransactionTimeout || d.Approval.OnTimeoutInTransaction != TxAbort {
		t.Errorf("approval defaults = %+v", d.Approval)
	}
	if d.Mask() != nil {
		t.Error("approve without mask rules has a mask")
	}
}

func TestDecideMasksMerge(t *testing.T) {
	p := mustParse(t, testPolicy)
	op := &Operation{Agent: "auditor", Target: "db", Action: ActionSelect, Objects: []Object{table("public.customers", ActionSelect)}}
	d := p.Decide(op)
	m := d.Mask()
	if m == nil {
		t.Fatal("no mask")
	}
	if strings.Join(m.RuleIDs, ",") != "auditor-mask-email,auditor-mask-ssn" {
		t.Errorf("RuleIDs = %v", m.RuleIDs)
	}
	for col, want := range map[string]Masker{
		"public.customers.email": MaskerPartial,
		"public.customers.ssn":   MaskerRedact, // hash and redact merged: the stronger wins
		"public.customers.name":  MaskerNone,
	} {
		if got := m.Column(col); got != want {
			t.Errorf("Column(%s) = %s, want %s", col, got, want)
		}
	}
	if m.Detector(DetectorCard) != MaskerRedact || m.Detector(DetectorEmail) != MaskerHash || m.Detector(DetectorIBAN) != MaskerNone {
		t.Errorf("detectors = %v", m.Detectors)
	}
	if !m.HasDetectors() {
		t.Error("HasDetectors = false")
	}
	if d2 := p.Decide(op); d2.Mask() != m {
		t.Error("merged mask not cached")
	}
	// Only one mask rule matches public.orders.
	d = p.Decide(&Operation{Agent: "auditor", Target: "db", Action: ActionSelect, Objects: []Object{table("public.orders", ActionSelect)}})
	if m := d.Mask(); m == nil || len(m.RuleIDs) != 1 || m.Column("public.orders.email") != MaskerNone {
		t.Errorf("single mask = %+v", m)
	}
}

func TestDecideApproveKeepsMasks(t *testing.T) {
	p := mustParse(t, `
version: 1
targets: [{name: db, protocol: postgres, address: "127.0.0.1:5432", auth: passthrough}]
agents: [{name: a, roles: [r]}]
roles:
  - name: r
    rules:
      - {id: del, actions: [delete], decision: approve, approval: {approvers: [dba]}}
      - {id: m, actions: [select], decision: mask, mask: {columns: {email: redact}}}
`)
	d := p.Decide(&Operation{Agent: "a", Target: "db", Action: ActionDelete, Objects: []Object{table("public.c", ActionDelete), table("public.d", ActionSelect)}})
	if d.Verdict != VerdictApprove || d.Mask() == nil || d.Mask().Column("x.y.email") != MaskerRedact {
		t.Errorf("approve with masks: %s %+v", d.Verdict, d.Mask())
	}
}

func TestDecideFunctionRules(t *testing.T) {
	p := mustParse(t, `
version: 1
targets: [{name: db, protocol: postgres, address: "127.0.0.1:5432", auth: passthrough}]
agents: [{name: a, roles: [r]}]
roles:
  - name: r
    rules:
      - {id: read, actions: [read], decision: allow}
      - {id: xml, function_categories: [dynamic_sql], decision: allow}
      - {id: by-name, functions: ["*.pg_sleep"], decision: allow}
      - {id: ddl-fn, actions: [create, drop], functions: ["app.*"], decision: allow}
      - {id: admin-block, actions: [admin], tables: ["x.y"], decision: block}
`)
	for _, tt := range []struct {
		name    string
		objects []Object
		want    Verdict
		rule    string
	}{
		{"category allowed", []Object{fn("pg_catalog.query_to_xml")}, VerdictAllow, "xml"},
		{"other category not allowed", []Object{fn("pg_catalog.pg_read_file")}, VerdictBlock, RuleDefaultDeny},
		{"categorised function allowed by name", []Object{fn("pg_catalog.pg_sleep")}, VerdictAllow, "by-name"},
		{"read rule does not cover calls", []Object{fn("public.f")}, VerdictBlock, RuleDefaultDeny},
		{"create function", []Object{{Kind: KindFunction, Name: "app.f", Action: ActionCreate}}, VerdictAllow, "ddl-fn"},
		{"function rule does not cover execute when actions given", []Object{fn("app.f")}, VerdictBlock, RuleDefaultDeny},
		{"drop built-in is not implicit", []Object{{Kind: KindFunction, Name: "pg_catalog.lower", Action: ActionDrop}}, VerdictBlock, RuleDefaultDeny},
		{"admin class with table selector ignores functions", []Object{fn("pg_catalog.query_to_xml")}, VerdictAllow, "xml"},
	} {
		op := &Operation{Agent: "a", Target: "db", Action: ActionSelect, Objects: tt.objects}
		if d := p.Decide(op); d.Verdict != tt.want || d.RuleID != tt.rule {
			t.Errorf("%s: Decide = %s by %s, want %s by %s", tt.name, d.Verdict, d.RuleID, tt.want, tt.rule)
		}
	}
}

// TestDecideUnresolvedFunction: a call the protocol layer cannot name (a
// fast-path call by OID) may be in any category: every block and approve
// rule on a category applies to it, allow rules on a category do not.
func TestDecideUnresolvedFunction(t *testing.T) {
	const head = `
version: 1
targets: [{name: db, protocol: postgres, address: "127.0.0.1:5432", auth: passthrough}]
agents: [{name: a, roles: [r]}]
roles:
  - name: r
    rules:
`
	unresolved := Object{Kind: KindFunction, Name: "fastpath.3826", Action: ActionExecute, Category: CategoryUnresolved}
	for _, tt := range []struct {
		name  string
		rules string
		want  Verdict
		rule  string
	}{
		{"category block applies", `
      - {id: exec, actions: [execute], decision: allow}
rules:
  - {id: no-files, function_categories: [server_files], decision: block}
`, VerdictBlock, "no-files"},
		{"dangerous block applies", `
      - {id: fast, functions: ["fastpath.*"], decision: allow}
rules:
  - {id: no-danger, actions: [dangerous], decision: block}
`, VerdictBlock, "no-danger"},
		{"category approve applies", `
      - {id: fast, functions: ["fastpath.*"], decision: allow}
      - {id: ask, function_categories: [admin], decision: approve, approval: {approvers: [dba]}}
`, VerdictApprove, "ask"},
		{"category allow does not cover it", `
      - {id: lo, function_categories: [large_objects], decision: allow}
      - {id: adm, actions: [admin], decision: allow}
`, VerdictBlock, RuleDefaultDeny},
		{"allowed by name", `
      - {id: fast, functions: ["fastpath.*"], decision: allow}
`, VerdictAllow, "fast"},
		{"category block beats an allow by name", `
      - {id: fast, functions: ["fastpath.3826"], decision: allow}
rules:
  - {id: no-lo, function_categories: [large_objects], decision: block}
  - {id: no-other, functions: ["fastpath.764"], decision: block}
`, VerdictBlock, "no-lo"},
	} {
		p := mustParse(t, head+tt.rules)
		op := &Operation{Agent: "a", Target: "db", Action: ActionExecute, Objects: []Object{unresolved}}
		if d := p.Decide(op); d.Verdict != tt.want || d.RuleID != tt.rule {
			t.Errorf("%s: Decide = %s by %s, want %s by %s", tt.name, d.Verdict, d.RuleID, tt.want, tt.rule)
		}
	}
	if s := CategoryUnresolved.String(); s != "unresolved" {
		t.Errorf("CategoryUnresolved.String() = %q", s)
	}
	if _, ok := ParseCategory("unresolved"); ok {
		t.Error("rules must not name the unresolved category")
	}
}

// TestDecideNoAllocs holds Decide to its promise on a realistic operation.
func TestDecideNoAllocs(t *testing.T) {
	p := mustParse(t, testPolicy)
	ops := []*Operation{
		{Agent: "writer", Roles: p.AgentRoles("writer"), Target: "db", Action: ActionUpdate, Objects: []Object{table("public.a", ActionUpdate), table("public.b", ActionSelect), fn("pg_catalog.lower")}, Attrs: Attributes{HasWhere: true, RowEstimate: 10}},
		{Agent: "auditor", Target: "db", Action: ActionSelect, Objects: []Object{table("public.customers", ActionSelect)}},
		{Agent: "writer", Target: "db", Action: ActionDrop, Objects: []Object{table("public.a", ActionDrop)}},
		{Agent: "reader", Target: "db", Action: ActionInsert, Objects: []Object{table("public.a", ActionInsert)}},
	}
	for _, op := range ops {
		if n := testing.AllocsPerRun(100, func() { _ = p.Decide(op) }); n != 0 {
			t.Errorf("Decide(%s) allocates %.0f times", op.Action, n)
		}
	}
}

func TestMasksFor(t *testing.T) {
	const src = `version: 1
targets:
  - {name: db, protocol: postgres, address: "127.0.0.1:5432", auth: passthrough}
  - {name: other, protocol: postgres, address: "127.0.0.1:5433", auth: passthrough}
agents:
  - {name: a, roles: [analyst]}
  - {name: b, roles: [writer]}
roles:
  - name: analyst
    rules:
      - {id: m-analyst, targets: [db], actions: [read], tables: [public.customers], decision: mask, mask: {columns: {email: redact}}}
  - name: writer
rules:
  - {id: m-global, targets: [db], actions: [read], decision: mask, mask: {detectors: [card]}}
`
	p, err := Parse("p.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	m := p.MasksFor("a", "db")
	if m == nil || len(m.RuleIDs) != 2 {
		t.Fatalf("analyst on db: %+v, want both mask rules", m)
	}
	if m := p.MasksFor("b", "db"); m == nil || len(m.RuleIDs) != 1 || m.RuleIDs[0] != "m-global" {
		t.Errorf("writer on db: %+v, want the global rule only", m)
	}
	if m := p.MasksFor("a", "other"); m != nil {
		t.Errorf("analyst on another target: %+v, want none", m)
	}
}

func TestDecideUnsureTx(t *testing.T) {
	p := mustParse(t, testPolicy)
	for _, guess := range []bool{false, true} {
		op := &Operation{Agent: "writer", Target: "db", Action: ActionDelete, Objects: []Object{table("public.ledger", ActionDelete)},
			Attrs: Attributes{HasWhere: true, InTransaction: guess, RowEstimate: 1}}
		// Out of a transaction writer-write allows it, in one
		// writer-delete-in-tx wants an approval: unsure means approval.
		d := p.DecideUnsureTx(op)
		if d.Verdict != VerdictApprove || d.RuleID != "writer-delete-in-tx" {
			t.Errorf("guess in_transaction=%v: %s by %s, want approve by writer-delete-in-tx", guess, d.Verdict, d.RuleID)
		}
		if op.Attrs.InTransaction != guess {
			t.Errorf("DecideUnsureTx changed the operation's in_transaction")
		}
	}
}

func TestStricter(t *testing.T) {
	p := mustParse(t, testPolicy)
	email := p.Decide(&Operation{Agent: "auditor", Target: "db", Action: ActionSelect, Objects: []Object{table("public.customers", ActionSelect)}})
	orders := p.Decide(&Operation{Agent: "auditor", Target: "db", Action: ActionSelect, Objects: []Object{table("public.orders", ActionSelect)}})
	allow := Decision{Verdict: VerdictAllow, RuleID: "x"}
	block := Decision{Verdict: VerdictBlock, RuleID: "y"}
	approve := Decision{Verdict: VerdictApprove, RuleID: "z"}
	for _, tc := range []struct {
		a, b Decision
		want Verdict
	}{
		{allow, block, VerdictBlock}, {block, allow, VerdictBlock},
		{allow, orders, VerdictMask}, {approve, orders, VerdictApprove},
		{approve, block, VerdictBlock}, {allow, allow, VerdictAllow},
		{Decision{Verdict: 99}, allow, VerdictBlock},
	} {
		if got := Stricter(tc.a, tc.b); got.Verdict != tc.want {
			t.Errorf("Stricter(%s, %s) = %s, want %s", tc.a.Verdict, tc.b.Verdict, got.Verdict, tc.want)
		}
	}
	// Two masks: both apply.
	m := Stricter(orders, email).Mask()
	if m == nil || m.Column("public.customers.email") != MaskerPartial || len(m.RuleIDs) != 2 {
		t.Errorf("merged masks = %+v", m)
	}
}
