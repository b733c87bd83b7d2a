package policy

// From a review of the transaction-state and restart handling; each test
// failed while the problem it names existed.

import "testing"

// Stricter keeps the masks of the other decision only when both verdicts
// are equal. Approve decisions carry masks too ("an approved statement's
// results are still masked"), so approve (one transaction state) over mask
// (the other) drops the mask decision's columns: once a human approves,
// the results come back unmasked, whichever state the statement ran in.
func TestStricterApproveOverMaskKeepsMasks(t *testing.T) {
	p := mustParse(t, `version: 1
targets:
  - {name: db, protocol: postgres, address: "127.0.0.1:5432", credentials: {user: app, password_env: X}}
agents:
  - {name: a, roles: [r]}
roles:
  - name: r
    rules:
      - {id: approve-outside-tx, actions: [select], tables: [public.customers], when: {in_transaction: false}, decision: approve, approval: {approvers: [dba]}}
      - {id: mask-in-tx, actions: [select], tables: [public.customers], when: {in_transaction: true}, decision: mask, mask: {columns: {email: redact}}}
`)
	op := &Operation{Agent: "a", Target: "db", Action: ActionSelect, Objects: []Object{table("public.customers", ActionSelect)}, Attrs: Attributes{InTransaction: true}}
	if m := p.Decide(op).Mask(); m == nil || m.Column("public.customers.email") != MaskerRedact {
		t.Fatalf("in a transaction: mask %+v, want email redacted", m)
	}
	d := p.DecideUnsureTx(op)
	t.Logf("unsure: %s by %s", d.Verdict, d.RuleID)
	if m := d.Mask(); m == nil || m.Column("public.customers.email") != MaskerRedact {
		t.Errorf("unsure transaction state: %s by %s with mask %+v: the in-transaction decision's email mask is dropped (approved, the statement may run in the transaction and return emails unmasked)", d.Verdict, d.RuleID, m)
	}
}

func TestConditionsOnTransaction(t *testing.T) {
	if p := mustParse(t, testPolicy); !p.ConditionsOnTransaction() {
		t.Error("a policy with an in_transaction condition: ConditionsOnTransaction = false")
	}
	p := mustParse(t, `
version: 1
targets: [{name: db, protocol: postgres, address: "127.0.0.1:5432", auth: passthrough}]
agents: [{name: a, roles: [r]}]
roles:
  - name: r
    rules:
      - {id: del, actions: [delete], when: {has_where: true}, decision: allow}
`)
	if p.ConditionsOnTransaction() {
		t.Error("a policy without in_transaction conditions: ConditionsOnTransaction = true")
	}
}
