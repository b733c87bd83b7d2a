package policy

import (
	"strings"
	"testing"
)

func TestLint(t *testing.T) {
	p := mustParse(t, head+`
agents:
  - {name: a, roles: [child]}
  - {name: lonely}
roles:
  - name: parent
    rules:
      - {id: parent-block, actions: [write], tables: ["public.*"], decision: block}
  - name: child
    inherits: [parent]
    rules:
      - {id: shadowed-by-parent, actions: [delete], tables: [public.orders], decision: allow}
      - {id: typo-target, targets: [dbb], actions: [read], decision: allow}
      - {id: partly-typo, targets: [db, "x*"], actions: [read], decision: allow}
      - {id: not-shadowed, actions: [delete], tables: [audit.log], decision: allow}
      - {id: conditional, actions: [read], decision: allow}
      - {id: approver, actions: [update], decision: approve, approval: {approvers: [child]}}
  - name: unused
    rules:
      - {id: unused-rule, actions: [read], decision: allow}
rules:
  - {id: global-block, actions: [drop, truncate], decision: block}
  - {id: shadowed-global, actions: [drop], decision: allow}
  - {id: block-when, actions: [read], when: {in_transaction: true}, decision: block}
`)
	var got []string
	for _, w := range p.Lint() {
		got = append(got, w.String())
	}
	want := []string{
		`test.yaml:10: warning: agent "lonely" has no roles: only global rules apply to it`,
		`test.yaml:18: warning: rule shadowed-by-parent never takes effect: block rule parent-block (line 14) matches everything it matches, and block always wins`,
		`test.yaml:19: warning: rule typo-target: target "dbb" matches no defined target`,
		`test.yaml:19: warning: rule typo-target can never match: none of its targets is defined`,
		`test.yaml:20: warning: rule partly-typo: target "x*" matches no defined target`,
		`test.yaml:23: warning: rule approver: approver role "child" is also held by an agent; agents can never approve, so only humans with that role can`,
		`test.yaml:24: warning: role "unused" is not held by any agent (directly or by inheritance): its rules never apply`,
		`test.yaml:29: warning: rule shadowed-global never takes effect: block rule global-block (line 28) matches everything it matches, and block always wins`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Lint:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
