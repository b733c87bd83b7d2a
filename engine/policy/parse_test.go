package policy

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// head is a valid preamble; tests append sections to it.
const head = `version: 1
targets:
  - name: db
    protocol: postgres
    address: 127.0.0.1:5432
    auth: passthrough
`

func parseErrors(t *testing.T, src string) []string {
	t.Helper()
	_, err := Parse("p.yaml", []byte(src))
	if err == nil {
		t.Fatalf("Parse succeeded, want errors")
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("error %v does not match ErrInvalid", err)
	}
	var list Errors
	if !errors.As(err, &list) {
		t.Fatalf("error is %T, want Errors", err)
	}
	var out []string
	for _, e := range list {
		out = append(out, e.Error())
	}
	return out
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // every error, in order
	}{
		{"empty", ``, []string{"p.yaml: empty policy file"}},
		{"syntax", "version: 1\ntargets: [\n", []string{"p.yaml:2: invalid YAML: did not find expected node content"}},
		{"not a mapping", "- a\n", []string{"p.yaml:1: policy must be a mapping, not a list"}},
		{"version missing", "targets: []\n", []string{"p.yaml:1: version is required (version: 1)"}},
		{"version wrong", "version: 2\n", []string{"p.yaml:1: unsupported policy version 2 (this build reads version 1)"}},
		{"two documents", "version: 1\n---\nversion: 1\n", []string{"p.yaml:2: a policy file holds one YAML document, found another"}},
		{"unknown top key", "version: 1\ntarget: []\n", []string{`p.yaml:2: unknown key "target" in policy (did you mean "targets"?)`}},
		{"duplicate key", "version: 1\nrules: []\nrules: []\n", []string{`p.yaml:3: duplicate key "rules" in policy (first at line 2)`}},
		{"unknown rule key, all errors collected", head + `
rules:
  - id: a
    actions: [select]
    tabels: [public.x]
    decision: allow
  - id: b
    actions: [selct]
    decision: maybe
`, []string{
			`p.yaml:11: unknown key "tabels" in rule a (did you mean "tables"?)`,
			`p.yaml:14: rule b: unknown action "selct" (did you mean "select"?)`,
			`p.yaml:15: rule b: decision must be one of allow, block, approve, mask, not "maybe"`,
		}},
		{"rule requirements", head + `
rules:
  - tables: [public.x]
    decision: allow
  - actions: [read]
  - actions: [read]
    decision: approve
  - actions: [read]
    decision: mask
    message: hi
`, []string{
			"p.yaml:9: rule global#1: actions is required (unless functions or function_categories is given)",
			"p.yaml:11: rule global#2: decision is required (allow, block, approve or mask)",
			"p.yaml:12: rule global#3: decision approve needs approval: {approvers: [...]}",
			"p.yaml:14: rule global#4: decision mask needs mask: {columns: ..., detectors: ...}",
			"p.yaml:16: rule global#4: message is only used with decision: block",
		}},
		{"unqualified table pattern", head + `
rules:
  - actions: [read]
    tables: [orders, "public.*", "a.b.c"]
    schemas: ["pub.x"]
    decision: allow
`, []string{
			`p.yaml:10: rule global#1: tables: "orders" must be schema-qualified, e.g. public.orders or *.orders`,
			`p.yaml:10: rule global#1: tables: "a.b.c" must be schema-qualified, e.g. public.c or *.c`,
			`p.yaml:11: rule global#1: schemas: "pub.x": a schema name has no '.'`,
		}},
		{"bad values", head + `
rules:
  - actions: [read]
    tables: ["public.[x"]
    function_categories: [files]
    when: {has_where: yes please, row_estimate_over: -3, in_tx: true}
    decision: approve
    approval: {approvers: [], timeout: forever, in_transaction_timeout: 2h}
`, []string{
			`p.yaml:10: rule global#1: tables: "public.[x": syntax error in pattern`,
			`p.yaml:11: rule global#1: unknown function category "files" (one of server_files, large_objects, backend_signal, remote, set_config, dynamic_sql, admin)`,
			`p.yaml:12: rule global#1: when: has_where must be true or false`,
			`p.yaml:12: rule global#1: when: row_estimate_over must not be negative`,
			`p.yaml:12: unknown key "in_tx" in rule global#1: when`,
			`p.yaml:14: rule global#1: approval: approvers must not be empty`,
			`p.yaml:14: rule global#1: approval: timeout: "forever" is not a duration (use e.g. 30s, 5m)`,
		}},
		{"mask validation", head + `
rules:
  - actions: [read]
    decision: mask
    mask: {columns: {"a.b.c.d": redact, email: scramble}, detectors: [email, dna], masker: blur}
`, []string{
			`p.yaml:11: rule global#1: mask: column "a.b.c.d": want column, table.column or schema.table.column`,
			`p.yaml:11: rule global#1: mask: column "email": unknown masker "scramble" (redact, partial, hash or null)`,
			`p.yaml:11: rule global#1: mask: unknown detector "dna" (one of email, card, ssn, iban, phone, ip, jwt, aws_key, api_token, pem)`,
			`p.yaml:11: rule global#1: mask: unknown masker "blur" (redact, partial, hash or null)`,
		}},
		{"duplicate and reserved ids", head + `
rules:
  - {id: x, actions: [read], decision: allow}
  - {id: x, actions: [read], decision: allow}
  - {id: default-deny, actions: [read], decision: block}
  - {id: "bad id", actions: [read], decision: block}
`, []string{
			`p.yaml:10: rule id "x" is already used at line 9; ids must be unique`,
			`p.yaml:11: rule default-deny: id "default-deny" is reserved for built-in decisions`,
			`p.yaml:12: rule bad id: id "bad id": use letters, digits and _ . : # / - (at most 128)`,
		}},
		{"roles", head + `
agents:
  - {name: a, roles: [r1, ghost]}
  - {name: a, roles: []}
roles:
  - {name: r1, inherits: [r2]}
  - {name: r2, inherits: [r3]}
  - {name: r3, inherits: [r1]}
  - {name: r4, inherits: [nope]}
`, []string{
			`p.yaml:9: agent "a": unknown role "ghost"`,
			`p.yaml:10: agent "a" is defined twice (first at line 9)`,
			`p.yaml:14: role inheritance cycle: r1 → r2 → r3 → r1`,
			`p.yaml:15: role "r4" inherits unknown role "nope"`,
		}},
		{"inheritance cycle", head + `
roles:
  - {name: r1, inherits: [r2]}
  - {name: r2, inherits: [r3]}
  - {name: r3, inherits: [r1]}
`, []string{`p.yaml:11: role inheritance cycle: r1 → r2 → r3 → r1`}},
		{"self inheritance", head + `
roles:
  - {name: r1, inherits: [r1]}
`, []string{`p.yaml:9: role inheritance cycle: r1 → r1`}},
		{"unknown inherited role", head + `
roles:
  - {name: r4, inherits: [nope]}
`, []string{`p.yaml:9: role "r4" inherits unknown role "nope"`}},
		{"targets", `version: 1
targets:
  - {name: a, protocol: postgres, address: "::1:5432", auth: passthrough}
  - {name: b, protocol: postgres, address: "db:0", auth: passthrough}
  - {name: c, protocol: mysql, address: "db:3306"}
  - {name: d, protocol: tcp, address: "db:1", auth: inject, tls: {mode: require}}
  - {name: e, protocol: postgres, address: "db:5432"}
  - {name: f, protocol: postgres, address: "db:5433", credentials: {user: u, password_env: A, password_file: /x}}
  - {name: g, protocol: postgres, address: "db:5434", credentials: {user: u, password_env: "hunter 2"}}
  - {name: h, protocol: postgres, address: "db:5435", credentials: {user: u, password_file: rel/pw}}
  - {name: i, protocol: tcp, address: "[::ffff:10.0.0.1]:6379"}
  - {name: j, protocol: tcp, address: "10.0.0.1:6379"}
  - {name: k, protocol: tcp, address: "0.0.0.0:1"}
  - {name: l, protocol: tcp, address: "bad_host!:1"}
  - {name: m, protocol: postgres, address: "db:5436", auth: passthrough, tls: {mode: require, ca_file: /ca.pem}}
  - {name: a, protocol: tcp, address: "db:9"}
  - {protocol: tcp}
`, []string{
			`p.yaml:3: target "a": address "::1:5432": want host:port ([addr]:port for IPv6): too many colons in address`,
			`p.yaml:4: target "b": address "db:0": port must be a number from 1 to 65535`,
			`p.yaml:5: target "c": protocol must be one of postgres, tcp, not "mysql"`,
			`p.yaml:6: target "d": auth is only used with protocol postgres`,
			`p.yaml:6: target "d": tls is only used with protocol postgres`,
			`p.yaml:7: target "e": auth: inject needs credentials (user and password_env or password_file)`,
			`p.yaml:8: target "f": credentials: give exactly one of password_env and password_file, not both`,
			`p.yaml:9: target "g": credentials: password_env "hunter 2" is not an environment variable name (the password itself never goes in the policy)`,
			`p.yaml:10: target "h": credentials: password_file "rel/pw" must be an absolute path`,
			`p.yaml:12: target "j": address 10.0.0.1:6379 is already used by target "i"; the kernel could not tell them apart`,
			`p.yaml:13: target "k": address "0.0.0.0:1": not a unicast address`,
			`p.yaml:14: target "l": address "bad_host!:1": "bad_host!" is neither an IP address nor a valid DNS name`,
			`p.yaml:15: target "m": tls: ca_file is only used with mode: verify-full`,
			`p.yaml:16: target "a" is defined twice (first at line 3)`,
			`p.yaml:17: target #15: name is required`,
			`p.yaml:17: target #15: address is required (host:port)`,
		}},
		{"agents", head + `
agents:
  - name: a
    egress: allow
    egress_allow: ["1.2.3.4"]
  - name: b
    egress: maybe
    egress_allow: ["1.2.3.4:0", "10.0.0.0/8", "fe80::1%eth0", "[fe80::1%eth0]:53", "host:53"]
    cgroups: ["agents/b", "/", "/x/../y", "/ok"]
  - name: c
    cgroups: ["/ok"]
  - name: "bad name"
`, []string{
			`p.yaml:11: agent "a": egress_allow is only used with egress: deny`,
			`p.yaml:13: agent "b": egress must be one of deny, allow, not "maybe"`,
			`p.yaml:14: agent "b": egress_allow: "1.2.3.4:0": port 0; omit the port to allow any port`,
			`p.yaml:14: agent "b": egress_allow: "10.0.0.0/8": prefixes are not supported, list exact addresses`,
			`p.yaml:14: agent "b": egress_allow: "fe80::1%eth0": IPv6 zones are not supported`,
			`p.yaml:14: agent "b": egress_allow: "[fe80::1%eth0]:53": IPv6 zones are not supported`,
			`p.yaml:14: agent "b": egress_allow: "host:53" is not an IP address with optional port (use [addr]:port for IPv6 with a port)`,
			`p.yaml:15: agent "b": cgroup "agents/b" must be a clean path from the cgroup2 root, starting with '/'`,
			`p.yaml:15: agent "b": the root cgroup cannot belong to an agent (it holds the engine too)`,
			`p.yaml:15: agent "b": cgroup "/x/../y" must be a clean path from the cgroup2 root, starting with '/'`,
			`p.yaml:17: agent "c": cgroup "/ok" is already labelled as agent "b"`,
			`p.yaml:18: agent name "bad name": use letters, digits, '_', '.' and '-' (at most 128, starting with a letter or digit)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseErrors(t, tt.src)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestParseTargets(t *testing.T) {
	p := mustParse(t, `version: 1
targets:
  - name: v4
    protocol: postgres
    address: 127.0.0.1:5432
    database: orders
    credentials: {user: app, password_env: PGPW}
  - name: v6
    protocol: postgres
    address: "[::1]:5432"
    auth: passthrough
    tls: {mode: verify-full, ca_file: /etc/ca.pem}
  - name: mapped
    protocol: tcp
    address: "[::ffff:10.1.2.3]:6379"
  - name: dns
    protocol: postgres
    address: DB.Example.com:6432
    credentials: {user: app, password_file: /run/pw}
    tls: {ca_file: /etc/ca.pem}
`)
	tests := []struct {
		name string
		want Target
	}{
		{"v4", Target{Name: "v4", Protocol: "postgres", Address: "127.0.0.1:5432", Host: "127.0.0.1", Port: 5432, IP: netip.MustParseAddr("127.0.0.1"),
			Auth: "inject", Database: "orders", Credentials: Credentials{User: "app", PasswordEnv: "PGPW"}, TLS: TargetTLS{Mode: "prefer"}}},
		{"v6", Target{Name: "v6", Protocol: "postgres", Address: "[::1]:5432", Host: "::1", Port: 5432, IP: netip.IPv6Loopback(),
			Auth: "passthrough", TLS: TargetTLS{Mode: "verify-full", CAFile: "/etc/ca.pem"}}},
		{"mapped", Target{Name: "mapped", Protocol: "tcp", Address: "[::ffff:10.1.2.3]:6379", Host: "10.1.2.3", Port: 6379, IP: netip.MustParseAddr("10.1.2.3")}},
		{"dns", Target{Name: "dns", Protocol: "postgres", Address: "DB.Example.com:6432", Host: "db.example.com", Port: 6432,
			Auth: "inject", Credentials: Credentials{User: "app", PasswordFile: "/run/pw"}, TLS: TargetTLS{Mode: "verify-full", CAFile: "/etc/ca.pem"}}},
	}
	for i, tt := range tests {
		got, ok := p.Target(tt.name)
		if !ok {
			t.Fatalf("target %s missing", tt.name)
		}
		if g := *got; !reflect.DeepEqual(g, tt.want) {
			t.Errorf("target %s:\n got %+v\nwant %+v", tt.name, g, tt.want)
		}
		if p.Targets()[i].Name != tt.name {
			t.Errorf("Targets() order: %d is %s", i, p.Targets()[i].Name)
		}
	}
	if _, ok := p.Target("nope"); ok {
		t.Error("unknown target found")
	}
}

func TestParseAgents(t *testing.T) {
	p := mustParse(t, head+`
agents:
  - name: a
    roles: [child]
    egress_allow: ["127.0.0.53:53", "[::1]:53", "10.1.2.3", "::ffff:192.0.2.1", "[::ffff:192.0.2.2]:443", "2001:db8::1"]
    cgroups: [/agents/a, /agents/a2]
    oidc_subject: ""
  - name: b
    roles: [child, parent]
    egress: allow
    oidc_subject: "user@example.com"
  - name: c
roles:
  - {name: parent, inherits: [grandparent, other]}
  - {name: grandparent}
  - {name: other, inherits: [grandparent]}
  - {name: child, inherits: [parent]}
`)
	a, ok := p.Agent("a")
	if !ok {
		t.Fatal("agent a missing")
	}
	if a.Egress != EgressDeny {
		t.Error("default egress is not deny")
	}
	var got []string
	for _, r := range a.EgressAllow {
		got = append(got, r.String())
	}
	want := "127.0.0.53:53 [::1]:53 10.1.2.3 192.0.2.1 192.0.2.2:443 2001:db8::1"
	if strings.Join(got, " ") != want {
		t.Errorf("egress_allow = %v, want %s", got, want)
	}
	if !a.EgressAllow[3].Allows(netip.MustParseAddr("::ffff:192.0.2.1"), 1234) || a.EgressAllow[0].Allows(netip.MustParseAddr("127.0.0.53"), 54) {
		t.Error("EgressRule.Allows")
	}
	if strings.Join(a.Cgroups, ",") != "/agents/a,/agents/a2" {
		t.Errorf("cgroups = %v", a.Cgroups)
	}
	if r := strings.Join(p.AgentRoles("a"), ","); r != "child,parent,grandparent,other" {
		t.Errorf("AgentRoles(a) = %s", r)
	}
	if r := strings.Join(p.AgentRoles("b"), ","); r != "child,parent,grandparent,other" {
		t.Errorf("AgentRoles(b) = %s", r)
	}
	if p.AgentRoles("c") != nil || p.AgentRoles("ghost") != nil {
		t.Error("AgentRoles of an agent without roles is not nil")
	}
	b, _ := p.Agent("b")
	if b.Egress != EgressAllow || b.OIDCSubject != "user@example.com" {
		t.Errorf("agent b = %+v", b)
	}
	if len(p.Agents()) != 3 {
		t.Errorf("Agents() = %d", len(p.Agents()))
	}
}

func TestParseRuleIDsAndOrder(t *testing.T) {
	p := mustParse(t, head+`
rules:
  - {actions: [read], decision: allow}
roles:
  - name: r
    rules:
      - {actions: [read], decision: allow}
      - {id: named, actions: [read], decision: allow}
agents: [{name: a, roles: [r]}]
`)
	for id, line := range map[string]int{"global#1": 9, "r#1": 13, "named": 14} {
		info, ok := p.Rule(id)
		if !ok || info.Line != line || info.File != "test.yaml" && info.File != "p.yaml" {
			t.Errorf("Rule(%s) = %+v, %v", id, info, ok)
		}
	}
	if _, ok := p.Rule(RuleDefaultDeny); ok {
		t.Error("Rule(default-deny) found")
	}
	if p.RuleCount() != 3 || p.Digest() == "" || p.File() != "test.yaml" {
		t.Errorf("RuleCount %d Digest %q File %q", p.RuleCount(), p.Digest(), p.File())
	}
}

func TestParseAliases(t *testing.T) {
	// Anchors and aliases work for whole values; merge keys are refused.
	p := mustParse(t, head+`
agents: [{name: a, roles: [r]}]
roles:
  - name: r
    rules:
      - {id: x, actions: &reads [select, show], decision: allow}
      - {id: y, actions: *reads, targets: [db], decision: allow}
`)
	if p.RuleCount() != 2 {
		t.Errorf("rules = %d", p.RuleCount())
	}
	errs := parseErrors(t, head+"rules:\n  - &r {id: a, actions: [read], decision: allow}\n  - <<: *r\n    id: b\n")
	if len(errs) == 0 || !strings.Contains(strings.Join(errs, "\n"), "p.yaml:9: merge keys (<<) are not supported in rule b") {
		t.Errorf("errors = %v", errs)
	}
}

func TestParseActions(t *testing.T) {
	for _, tt := range []struct {
		name    string
		has     []Action
		hasNot  []Action
		allCats bool
	}{
		{"read", []Action{ActionSelect, ActionExplain, ActionFetch, ActionShow}, []Action{ActionInsert, ActionExecute}, false},
		{"write", []Action{ActionInsert, ActionUpdate, ActionDelete, ActionMerge, ActionTruncate, ActionLock}, []Action{ActionSelect}, false},
		{"ddl", []Action{ActionCreate, ActionAlter, ActionDrop, ActionComment}, []Action{ActionGrant}, false},
		{"dangerous", []Action{ActionDrop, ActionTruncate, ActionGrant, ActionSetRole, ActionCopyToProgram, ActionCopyFromFile, ActionDo}, []Action{ActionAlter, ActionSelect, ActionExecute, ActionCreate}, true},
		{"admin", nil, []Action{ActionExecute}, true},
		{"all", []Action{ActionSelect, ActionExecute, ActionHTTPGet}, nil, true},
		{"copy_to_program", []Action{ActionCopyToProgram}, []Action{ActionCopyToStdout}, false},
		{"GET", []Action{ActionHTTPGet}, nil, false},
	} {
		set, cats, ok := expandAction(tt.name)
		if !ok {
			t.Fatalf("expandAction(%s) failed", tt.name)
		}
		for _, a := range tt.has {
			if !set.Has(a) {
				t.Errorf("%s lacks %s", tt.name, a)
			}
		}
		for _, a := range tt.hasNot {
			if set.Has(a) {
				t.Errorf("%s has %s", tt.name, a)
			}
		}
		if (cats == allCategories) != tt.allCats {
			t.Errorf("%s categories = %b", tt.name, cats)
		}
	}
	if _, cats, ok := expandAction("server_files"); !ok || !cats.has(CategoryServerFiles) || cats.has(CategoryRemote) {
		t.Error("category name in actions")
	}
	if _, _, ok := expandAction("get"); ok {
		t.Error("lower-case HTTP method accepted")
	}
}

func TestRoleCredentials(t *testing.T) {
	const src = `version: 1
targets:
  - name: db
    protocol: postgres
    address: 127.0.0.1:5432
    credentials: {user: app, password_env: APP_PW}
    role_credentials:
      analyst: {user: app_ro, password_file: /run/ro.pw}
agents:
  - {name: a, roles: [writer, analyst]}
roles:
  - {name: analyst}
  - {name: writer}
`
	p, err := Parse("p.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	tg, _ := p.Target("db")
	if c := tg.CredentialsFor([]string{"writer", "analyst"}); c.User != "app_ro" {
		t.Errorf("writer+analyst connects as %q, want app_ro (first listed role with its own user)", c.User)
	}
	if c := tg.CredentialsFor([]string{"writer"}); c.User != "app" {
		t.Errorf("writer connects as %q, want the default app", c.User)
	}
	bad := strings.Replace(src, "analyst: {user: app_ro", "ghost: {user: app_ro", 1)
	if _, err := Parse("p.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), `p.yaml:8: target "db": role_credentials: unknown role "ghost"`) {
		t.Errorf("unknown role in role_credentials: %v", err)
	}
	noPw := strings.Replace(src, ", password_file: /run/ro.pw", "", 1)
	if _, err := Parse("p.yaml", []byte(noPw)); err == nil || !strings.Contains(err.Error(), "exactly one of password_env and password_file") {
		t.Errorf("role credentials without a password source: %v", err)
	}
}
