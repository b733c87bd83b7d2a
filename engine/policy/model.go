package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Policy is a compiled policy file. It is immutable after Parse and safe for
// concurrent use; values returned by its accessors share its memory and must
// not be modified.
type Policy struct {
	file   string
	digest string // sha256 of the source, hex, for audit records

	targets   []Target
	targetIdx map[string]int
	agents    []Agent
	agentIdx  map[string]int
	// Lines of the definitions, kept apart so that Target and Agent compare
	// equal across reloads that only move them in the file.
	targetLines []int
	agentLines  []int
	roles       []*role
	roleIdx     map[string]int

	// agentRoles is each agent's role list with inheritance expanded.
	agentRoles map[string][]string

	// rules in policy order (the order they appear in the file); rule.idx is
	// the position here, and lower wins when several rules of the same
	// decision match.
	rules  []*rule
	ruleID map[string]*rule

	// byTarget holds, per target name, the rules that can apply to it,
	// pre-filtered by action so Decide touches only plausible rules.
	byTarget map[string]*targetRules

	maskRules []*rule // rules with decision mask, by mask bit
	maskCache sync.Map

	condTx bool // some rule tests in_transaction (ConditionsOnTransaction)
}

// Agent is a workload whose connections Interlock intercepts, identified by
// the cgroup label (or the static cgroups list) the kernel side matches.
type Agent struct {
	Name  string
	Roles []string // as written; see Policy.AgentRoles for the expanded list
	// Egress says what happens to connections to destinations that are not
	// targets. EgressDeny, the zero value, refuses them except EgressAllow.
	Egress      Egress
	EgressAllow []EgressRule
	// Cgroups are cgroup v2 paths relative to the cgroup2 mount, starting
	// with '/', labelled statically as this agent (in addition to the
	// user.interlock.agent xattr).
	Cgroups     []string
	OIDCSubject string
}

// Egress is an agent's default for non-target destinations.
type Egress uint8

const (
	EgressDeny  Egress = iota // refuse connections that are not to a target (default)
	EgressAllow               // let them through untouched
)

func (e Egress) String() string {
	if e == EgressAllow {
		return "allow"
	}
	return "deny"
}

// EgressRule lets a deny-egress agent reach one address. IPv4-mapped IPv6
// literals are stored unmapped (as IPv4): the kernel side must compare a
// v4-mapped destination seen in connect6 against the IPv4 entry.
type EgressRule struct {
	Addr netip.Addr
	Port uint16 // 0 means any port
}

func (r EgressRule) String() string {
	if r.Port == 0 {
		return r.Addr.String()
	}
	return netip.AddrPortFrom(r.Addr, r.Port).String()
}

// Allows reports whether a connection to ip:port is let through by the rule.
func (r EgressRule) Allows(ip netip.Addr, port uint16) bool {
	return r.Addr == ip.Unmap() && (r.Port == 0 || r.Port == port)
}

// Target is a protected destination: the kernel redirects agents'
// connections to Address into the engine.
type Target struct {
	Name     string
	Protocol string // "postgres" or "tcp"
	Address  string // as written, host:port
	Host     string // host part; IP literals are normalised (unmapped, no brackets)
	Port     uint16
	// IP is the address when Host is an IP literal, invalid for DNS names
	// (which the kernel side resolves).
	IP       netip.Addr
	Auth     string // "inject" (default for postgres) or "passthrough"; empty for tcp
	Database string // upstream database override, postgres only
	// Credentials are injected by the engine when Auth is "inject".
	Credentials Credentials
	// RoleCredentials are per-role database users (auth: inject): an agent
	// connects as the user of the first of its roles listed here, in the
	// order of Policy.AgentRoles, else with Credentials.
	RoleCredentials map[string]Credentials
	TLS             TargetTLS
}

// Protocols and auth modes understood in target definitions.
const (
	ProtocolPostgres = "postgres"
	ProtocolTCP      = "tcp"

	AuthInject      = "inject"
	AuthPassthrough = "passthrough"
)

// CredentialsFor returns the credentials an agent with roles connects with.
func (t *Target) CredentialsFor(roles []string) Credentials {
	for _, r := range roles {
		if c, ok := t.RoleCredentials[r]; ok {
			return c
		}
	}
	return t.Credentials
}

// Credentials say where the engine finds the upstream secret. The file never
// holds the secret itself.
type Credentials struct {
	User         string
	PasswordEnv  string // name of an environment variable
	PasswordFile string // absolute path of a file holding the password
}

// TargetTLS configures the engine's connection to the target.
type TargetTLS struct {
	Mode   string // disable, prefer (default), require, verify-full
	CAFile string // PEM bundle for verify-full; system roots when empty
}

// TLS modes, with libpq's meaning.
const (
	TLSDisable    = "disable"
	TLSPrefer     = "prefer"
	TLSRequire    = "require"
	TLSVerifyFull = "verify-full"
)

// Approval is what an approve decision asks for.
type Approval struct {
	// Approvers are the human roles (from the approvers' identity provider)
	// allowed to approve. Agents can never approve.
	Approvers []string
	// Timeout is how long the statement is held outside a transaction
	// before it fails as denied.
	Timeout time.Duration
	// InTransactionTimeout is the shorter hold inside a transaction block,
	// where waiting keeps locks.
	InTransactionTimeout time.Duration
	// OnTimeoutInTransaction says what an unanswered approval inside a
	// transaction does.
	OnTimeoutInTransaction TxTimeout
}

// Approval defaults.
const (
	DefaultApprovalTimeout      = 60 * time.Second
	DefaultInTransactionTimeout = 15 * time.Second
)

// TxTimeout is what happens when an approval inside a transaction times out.
type TxTimeout uint8

const (
	// TxAbort fails the statement; the transaction is then aborted and the
	// client must roll back, but the session stays open.
	TxAbort TxTimeout = iota
	// TxTerminate closes the session, releasing its locks at once.
	TxTerminate
)

func (t TxTimeout) String() string {
	if t == TxTerminate {
		return "terminate"
	}
	return "abort"
}

// role is a named set of rules, possibly inheriting other roles.
type role struct {
	name     string
	inherits []string
	line     int
	// inheritNodes locate each inherits entry for errors found in compile.
	inheritNodes []*yaml.Node
	rules        []*rule
	expanded     []string // itself, then inherited roles, breadth first
}

// rule is one compiled rule.
type rule struct {
	id       string
	idx      int    // position in policy order
	role     string // "" for global rules
	line     int
	decision Verdict
	message  string

	targets    globList // empty: all targets
	targetSpec []string // as written, for Lint

	actions  ActionBits
	callCats categorySet // calls of functions in these categories match as if their action were listed

	hasSelector bool // any of the object selectors below is set
	tables      globList
	schemas     globList
	functions   globList
	categories  categorySet // selector: function objects of these categories
	paths       globList
	settings    globList
	databases   globList

	when conditions

	approval *Approval
	mask     *Mask
	maskBit  int // index in Policy.maskRules, -1 when not a mask rule
}

// categorySet is a bitset of FunctionCategory.
type categorySet uint16

func (s categorySet) has(c FunctionCategory) bool { return s&(1<<c) != 0 }
func (s *categorySet) add(c FunctionCategory)     { *s |= 1 << c }

// conditions are a rule's optional `when` tests on operation attributes.
type conditions struct {
	hasWhere      tristate
	inTransaction tristate
	rowsOver      int64 // matched when RowEstimate > rowsOver; -1: no test
}

type tristate uint8

const (
	unset tristate = iota
	wantFalse
	wantTrue
)

func (t tristate) ok(v bool) bool {
	return t == unset || (t == wantTrue) == v
}

func (t tristate) String() string {
	switch t {
	case wantTrue:
		return "true"
	case wantFalse:
		return "false"
	}
	return "any"
}

// String renders the conditions for explain output.
func (c conditions) String() string {
	s := ""
	if c.hasWhere != unset {
		s += " has_where=" + c.hasWhere.String()
	}
	if c.inTransaction != unset {
		s += " in_transaction=" + c.inTransaction.String()
	}
	if c.rowsOver >= 0 {
		s += " row_estimate_over=" + strconv.FormatInt(c.rowsOver, 10)
	}
	if s == "" {
		return ""
	}
	return s[1:]
}

// File is the name the policy was parsed from.
func (p *Policy) File() string { return p.file }

// Digest is the hex SHA-256 of the policy source, for audit records.
func (p *Policy) Digest() string { return p.digest }

// Agents returns every agent in file order.
func (p *Policy) Agents() []Agent { return append([]Agent(nil), p.agents...) }

// Agent returns the named agent.
func (p *Policy) Agent(name string) (*Agent, bool) {
	i, ok := p.agentIdx[name]
	if !ok {
		return nil, false
	}
	return &p.agents[i], true
}

// Targets returns every target in file order.
func (p *Policy) Targets() []Target { return append([]Target(nil), p.targets...) }

// Target returns the named target.
func (p *Policy) Target(name string) (*Target, bool) {
	i, ok := p.targetIdx[name]
	if !ok {
		return nil, false
	}
	return &p.targets[i], true
}

// AgentRoles returns the agent's roles with inheritance expanded (its own
// roles first, then inherited ones breadth first, without duplicates), or
// nil for an unknown agent. Protocol layers put it in Operation.Roles.
func (p *Policy) AgentRoles(agent string) []string { return p.agentRoles[agent] }

// RuleCount is the number of rules, global and per role.
func (p *Policy) RuleCount() int { return len(p.rules) }

// RuleInfo describes one rule, for explain output and audit records.
type RuleInfo struct {
	ID       string
	Role     string // "" for a global rule
	Decision Verdict
	Message  string
	File     string
	Line     int
}

// Rule describes the rule with the given id. Built-in ids (RuleDefaultDeny,
// …) are not rules and return false.
func (p *Policy) Rule(id string) (RuleInfo, bool) {
	r, ok := p.ruleID[id]
	if !ok {
		return RuleInfo{}, false
	}
	return RuleInfo{ID: r.id, Role: r.role, Decision: r.decision, Message: r.message, File: p.file, Line: r.line}, true
}

func (r *rule) scope() string {
	if r.role == "" {
		return "global"
	}
	return "role " + r.role
}

func (r *rule) String() string {
	return fmt.Sprintf("%s (%s, %s)", r.id, r.scope(), r.decision)
}
