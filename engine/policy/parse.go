package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads and parses a policy file.
func Load(filename string) (*Policy, error) {
	data, err := os.ReadFile(filename)
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	return Parse(filename, data)
}

// Parse compiles a policy file. filename is only used in error messages. On
// failure the error is an Errors listing every problem found, each with its
// line; errors.Is(err, ErrInvalid) holds.
func Parse(filename string, data []byte) (pol *Policy, err error) {
	d := &decoder{file: filename}
	defer func() {
		if r := recover(); r != nil {
			if r != errTooLarge {
				panic(r)
			}
			d.errorf(nil, "policy too large (more than %d YAML nodes after expanding aliases)", maxNodes)
			pol, err = nil, d.errs
		}
	}()
	root, err := d.parseDocument(data)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	p := &Policy{file: filename, digest: hex.EncodeToString(sum[:])}
	// Cross-references are checked even when sections had errors, so one
	// run reports everything; compile only looks at what parsed cleanly.
	if d.document(p, root) {
		compile(d, p)
	}
	if len(d.errs) > 0 {
		d.errs.sort()
		return nil, d.errs
	}
	return p, nil
}

// Top-level keys, in the order the documentation presents them.
var topKeys = []string{"version", "targets", "agents", "roles", "rules"}

// document parses the top level. Sections are parsed in dependency order
// (targets and roles before the agents and rules that refer to them), not
// in file order.
func (d *decoder) document(p *Policy, root *yaml.Node) bool {
	sections := map[string]*yaml.Node{}
	if !d.mapping(root, "policy", topKeys, func(key string, v *yaml.Node) { sections[key] = v }) {
		return false
	}
	if isNull(d.resolve(root)) {
		d.errorf(root, "empty policy file")
		return false
	}
	if v, ok := sections["version"]; !ok {
		d.errorf(root, "version is required (version: 1)")
	} else if n, ok := d.integer(v, "version"); ok && n != 1 {
		d.errorf(v, "unsupported policy version %d (this build reads version 1)", n)
	}
	d.targets(p, sections["targets"])
	d.roles(p, sections["roles"])
	for _, r := range d.roleRefs {
		if _, known := p.roleIdx[r.role]; !known {
			d.errorf(r.node, "%s: unknown role %q", r.what, r.role)
		}
	}
	d.agents(p, sections["agents"])
	d.sequence(sections["rules"], "rules", func(i int, v *yaml.Node) {
		if r := d.rule(v, "", i); r != nil {
			p.rules = append(p.rules, r)
		}
	})
	return true
}

// Names of targets, agents and roles end up in cgroup xattrs, metric labels
// and audit records: keep them plain.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Rule ids may also contain ':', '#' and '/' (the default ids use '#').
var ruleIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:#/-]{0,127}$`)

func (d *decoder) name(n *yaml.Node, what string) (string, bool) {
	s, ok := d.str(n, what)
	if !ok {
		return "", false
	}
	if !nameRE.MatchString(s) {
		d.errorf(n, "%s %q: use letters, digits, '_', '.' and '-' (at most 128, starting with a letter or digit)", what, s)
		return "", false
	}
	return s, true
}

// nameField finds the "name" of a mapping node before the rest is parsed,
// so that errors further down can say which entry they are about.
func nameField(n *yaml.Node) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "name" {
			return n.Content[i+1]
		}
	}
	return nil
}

var targetKeys = []string{"name", "protocol", "address", "auth", "database", "credentials", "role_credentials", "tls"}

func (d *decoder) targets(p *Policy, n *yaml.Node) {
	p.targetIdx = map[string]int{}
	endpoints := map[string]string{}
	d.sequence(n, "targets", func(i int, v *yaml.Node) {
		v = d.resolve(v)
		var t Target
		what := fmt.Sprintf("target #%d", i+1)
		if nn := nameField(v); nn != nil && nn.Kind == yaml.ScalarNode && nn.Value != "" {
			what = fmt.Sprintf("target %q", nn.Value)
		}
		var protoNode, authNode, dbNode, credNode, roleCredNode, tlsNode *yaml.Node
		ok := d.mapping(v, what, targetKeys, func(key string, f *yaml.Node) {
			switch key {
			case "name":
				t.Name, _ = d.name(f, "target name")
			case "protocol":
				protoNode = f
				t.Protocol, _ = d.oneOf(f, what+": protocol", ProtocolPostgres, ProtocolTCP)
			case "address":
				t.Address, _ = d.str(f, what+": address")
				if t.Address != "" {
					d.address(f, what, &t)
				}
			case "auth":
				authNode = f
				t.Auth, _ = d.oneOf(f, what+": auth", AuthInject, AuthPassthrough)
			case "database":
				dbNode = f
				t.Database, _ = d.str(f, what+": database")
			case "credentials":
				credNode = f
				d.credentials(f, what, &t.Credentials)
			case "role_credentials":
				roleCredNode = f
				d.roleCredentials(f, what, &t)
			case "tls":
				tlsNode = f
				d.targetTLS(f, what, &t.TLS)
			}
		})
		if !ok {
			return
		}
		if t.Name == "" && nameField(v) == nil {
			d.errorf(v, "%s: name is required", what)
		}
		if protoNode == nil {
			d.errorf(v, "%s: protocol is required (postgres or tcp)", what)
		}
		if t.Address == "" && !hasKey(v, "address") {
			d.errorf(v, "%s: address is required (host:port)", what)
		}
		switch t.Protocol {
		case ProtocolPostgres:
			if t.Auth == "" {
				t.Auth = AuthInject
			}
			if t.TLS.Mode == "" {
				t.TLS.Mode = TLSPrefer
			}
			c := t.Credentials
			switch {
			case t.Auth == AuthInject && credNode == nil:
				d.errorf(v, "%s: auth: inject needs credentials (user and password_env or password_file)", what)
			case t.Auth == AuthPassthrough && credNode != nil:
				d.errorf(credNode, "%s: credentials are only used with auth: inject", what)
			case t.Auth == AuthPassthrough && roleCredNode != nil:
				d.errorf(roleCredNode, "%s: role_credentials are only used with auth: inject", what)
			case credNode != nil && (c.User == "" || (c.PasswordEnv == "") == (c.PasswordFile == "")):
				if c.User == "" && !hasKey(d.resolve(credNode), "user") {
					d.errorf(credNode, "%s: credentials: user is required", what)
				}
				if c.PasswordEnv != "" && c.PasswordFile != "" {
					d.errorf(credNode, "%s: credentials: give exactly one of password_env and password_file, not both", what)
				} else if !hasKey(d.resolve(credNode), "password_env") && !hasKey(d.resolve(credNode), "password_file") {
					d.errorf(credNode, "%s: credentials: give exactly one of password_env and password_file", what)
				}
			}
		case ProtocolTCP:
			// A raw TCP relay has no authentication or TLS layer of its own
			// to configure: reject settings that would silently do nothing.
			for _, f := range []struct {
				n    *yaml.Node
				name string
			}{{authNode, "auth"}, {dbNode, "database"}, {credNode, "credentials"}, {roleCredNode, "role_credentials"}, {tlsNode, "tls"}} {
				if f.n != nil {
					d.errorf(f.n, "%s: %s is only used with protocol postgres", what, f.name)
				}
			}
		}
		if t.Name != "" {
			if j, dup := p.targetIdx[t.Name]; dup {
				d.errorf(v, "target %q is defined twice (first at line %d)", t.Name, p.targetLines[j])
				return
			}
		}
		if t.Port != 0 {
			ep := net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
			if other, dup := endpoints[ep]; dup {
				d.errorf(v, "%s: address %s is already used by target %q; the kernel could not tell them apart", what, ep, other)
			}
			endpoints[ep] = t.Name
		}
		if t.Name != "" {
			p.targetIdx[t.Name] = len(p.targets)
		}
		p.targets = append(p.targets, t)
		p.targetLines = append(p.targetLines, v.Line)
	})
}

func hasKey(n *yaml.Node, key string) bool {
	if n == nil || n.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

// address parses host:port. IPv6 literals must be bracketed; IPv4-mapped
// IPv6 literals are unmapped so the kernel side keys every IPv4 destination
// one way.
func (d *decoder) address(n *yaml.Node, what string, t *Target) {
	host, port, err := net.SplitHostPort(t.Address)
	if err != nil {
		d.errorf(n, "%s: address %q: want host:port ([addr]:port for IPv6): %v", what, t.Address, unwrapAddrErr(err))
		return
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil || pn == 0 {
		d.errorf(n, "%s: address %q: port must be a number from 1 to 65535", what, t.Address)
		return
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			d.errorf(n, "%s: address %q: IPv6 zones are not supported", what, t.Address)
			return
		}
		ip = ip.Unmap()
		if ip.IsUnspecified() || ip.IsMulticast() {
			d.errorf(n, "%s: address %q: not a unicast address", what, t.Address)
			return
		}
		t.IP, t.Host = ip, ip.String()
	} else if !validHostname(host) {
		d.errorf(n, "%s: address %q: %q is neither an IP address nor a valid DNS name", what, t.Address, host)
		return
	} else {
		t.Host = strings.ToLower(host)
	}
	t.Port = uint16(pn)
}

// unwrapAddrErr drops net's "address X:" prefix, which would repeat ours.
func unwrapAddrErr(err error) string {
	if ae, ok := err.(*net.AddrError); ok {
		return ae.Err
	}
	return err.Error()
}

func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

var credentialKeys = []string{"user", "password_env", "password_file"}

// roleCredentials parses a target's per-role database users: agents whose
// roles include a listed role connect as that user instead of the target's
// default credentials.
func (d *decoder) roleCredentials(n *yaml.Node, what string, t *Target) {
	n = d.resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: role_credentials must map role names to credentials", what)
		return
	}
	t.RoleCredentials = map[string]Credentials{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		role := k.Value
		w := fmt.Sprintf("%s: role_credentials: %s", what, role)
		var c Credentials
		d.credentials(v, w, &c)
		if c.User == "" {
			d.errorf(v, "%s: credentials: user is required", w)
		}
		if (c.PasswordEnv == "") == (c.PasswordFile == "") {
			d.errorf(v, "%s: credentials: give exactly one of password_env and password_file", w)
		}
		t.RoleCredentials[role] = c
		d.roleRefs = append(d.roleRefs, roleRef{node: k, role: role, what: what + ": role_credentials"})
	}
}

func (d *decoder) credentials(n *yaml.Node, what string, c *Credentials) {
	what += ": credentials"
	d.mapping(n, what, credentialKeys, func(key string, v *yaml.Node) {
		switch key {
		case "user":
			c.User, _ = d.str(v, what+": user")
		case "password_env":
			if s, ok := d.str(v, what+": password_env"); ok {
				if !envNameRE.MatchString(s) {
					d.errorf(v, "%s: password_env %q is not an environment variable name (the password itself never goes in the policy)", what, s)
				}
				c.PasswordEnv = s
			}
		case "password_file":
			if s, ok := d.str(v, what+": password_file"); ok {
				if !filepath.IsAbs(s) {
					d.errorf(v, "%s: password_file %q must be an absolute path", what, s)
				}
				c.PasswordFile = s
			}
		}
	})
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

var tlsKeys = []string{"mode", "ca_file"}

func (d *decoder) targetTLS(n *yaml.Node, what string, t *TargetTLS) {
	what += ": tls"
	var caNode *yaml.Node
	d.mapping(n, what, tlsKeys, func(key string, v *yaml.Node) {
		switch key {
		case "mode":
			t.Mode, _ = d.oneOf(v, what+": mode", TLSDisable, TLSPrefer, TLSRequire, TLSVerifyFull)
		case "ca_file":
			caNode = v
			if s, ok := d.str(v, what+": ca_file"); ok {
				if !filepath.IsAbs(s) {
					d.errorf(v, "%s: ca_file %q must be an absolute path", what, s)
				}
				t.CAFile = s
			}
		}
	})
	if caNode != nil && t.Mode != TLSVerifyFull && t.Mode != "" {
		// libpq uses the CA with verify-ca too, but require and prefer do
		// not verify at all: a CA there suggests a mistaken mode.
		d.errorf(caNode, "%s: ca_file is only used with mode: verify-full", what)
	}
	if caNode != nil && t.Mode == "" {
		t.Mode = TLSVerifyFull
	}
}

var agentKeys = []string{"name", "roles", "egress", "egress_allow", "cgroups", "oidc_subject"}

func (d *decoder) agents(p *Policy, n *yaml.Node) {
	p.agentIdx = map[string]int{}
	cgroupOwner := map[string]string{}
	d.sequence(n, "agents", func(i int, v *yaml.Node) {
		v = d.resolve(v)
		var a Agent
		what := fmt.Sprintf("agent #%d", i+1)
		if nn := nameField(v); nn != nil && nn.Kind == yaml.ScalarNode && nn.Value != "" {
			what = fmt.Sprintf("agent %q", nn.Value)
		}
		var allowNode *yaml.Node
		ok := d.mapping(v, what, agentKeys, func(key string, f *yaml.Node) {
			switch key {
			case "name":
				a.Name, _ = d.name(f, "agent name")
			case "roles":
				names, nodes := d.strList(f, what+": roles")
				for j, r := range names {
					if _, known := p.roleIdx[r]; !known {
						d.errorf(nodes[j], "%s: unknown role %q", what, r)
						continue
					}
					if contains(a.Roles, r) {
						d.errorf(nodes[j], "%s: role %q listed twice", what, r)
						continue
					}
					a.Roles = append(a.Roles, r)
				}
			case "egress":
				if s, ok := d.oneOf(f, what+": egress", "deny", "allow"); ok && s == "allow" {
					a.Egress = EgressAllow
				}
			case "egress_allow":
				allowNode = f
				entries, nodes := d.strList(f, what+": egress_allow")
				for j, e := range entries {
					if r, err := parseEgress(e); err != nil {
						d.errorf(nodes[j], "%s: egress_allow: %v", what, err)
					} else {
						a.EgressAllow = append(a.EgressAllow, r)
					}
				}
			case "cgroups":
				paths, nodes := d.strList(f, what+": cgroups")
				for j, c := range paths {
					switch {
					case !strings.HasPrefix(c, "/") || path.Clean(c) != c:
						d.errorf(nodes[j], "%s: cgroup %q must be a clean path from the cgroup2 root, starting with '/'", what, c)
					case c == "/":
						d.errorf(nodes[j], "%s: the root cgroup cannot belong to an agent (it holds the engine too)", what)
					default:
						if owner, dup := cgroupOwner[c]; dup {
							d.errorf(nodes[j], "%s: cgroup %q is already labelled as agent %q", what, c, owner)
							continue
						}
						cgroupOwner[c] = a.Name
						a.Cgroups = append(a.Cgroups, c)
					}
				}
			case "oidc_subject":
				// An empty subject is the documented "not bound" value.
				if f = d.resolve(f); f != nil && f.Kind == yaml.ScalarNode && !isNull(f) {
					a.OIDCSubject = f.Value
				} else if !isNull(f) {
					d.errorf(f, "%s: oidc_subject must be a string", what)
				}
			}
		})
		if !ok {
			return
		}
		if a.Name == "" {
			if nameField(v) == nil {
				d.errorf(v, "%s: name is required", what)
			}
			return
		}
		if allowNode != nil && a.Egress == EgressAllow {
			d.errorf(allowNode, "%s: egress_allow is only used with egress: deny", what)
		}
		if j, dup := p.agentIdx[a.Name]; dup {
			d.errorf(v, "agent %q is defined twice (first at line %d)", a.Name, p.agentLines[j])
			return
		}
		p.agentIdx[a.Name] = len(p.agents)
		p.agents = append(p.agents, a)
		p.agentLines = append(p.agentLines, v.Line)
	})
}

// parseEgress parses "ip", "ip:port", "[ipv6]:port" or a bare IPv6 literal.
func parseEgress(s string) (EgressRule, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return EgressRule{}, fmt.Errorf("%q: port 0; omit the port to allow any port", s)
		}
		if ap.Addr().Zone() != "" {
			return EgressRule{}, fmt.Errorf("%q: IPv6 zones are not supported", s)
		}
		return EgressRule{Addr: ap.Addr().Unmap(), Port: ap.Port()}, nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		if strings.Contains(s, "/") {
			return EgressRule{}, fmt.Errorf("%q: prefixes are not supported, list exact addresses", s)
		}
		return EgressRule{}, fmt.Errorf("%q is not an IP address with optional port (use [addr]:port for IPv6 with a port)", s)
	}
	if ip.Zone() != "" {
		return EgressRule{}, fmt.Errorf("%q: IPv6 zones are not supported", s)
	}
	return EgressRule{Addr: ip.Unmap()}, nil
}

var roleKeys = []string{"name", "inherits", "rules"}

// roles parses role definitions; inheritance is checked in compile once
// every role is known.
func (d *decoder) roles(p *Policy, n *yaml.Node) {
	p.roleIdx = map[string]int{}
	d.sequence(n, "roles", func(i int, v *yaml.Node) {
		v = d.resolve(v)
		r := &role{line: v.Line}
		what := fmt.Sprintf("role #%d", i+1)
		if nn := nameField(v); nn != nil && nn.Kind == yaml.ScalarNode && nn.Value != "" {
			what = fmt.Sprintf("role %q", nn.Value)
		}
		var rulesNode *yaml.Node
		var inheritNodes []*yaml.Node
		ok := d.mapping(v, what, roleKeys, func(key string, f *yaml.Node) {
			switch key {
			case "name":
				r.name, _ = d.name(f, "role name")
			case "inherits":
				r.inherits, inheritNodes = d.strList(f, what+": inherits")
			case "rules":
				rulesNode = f
			}
		})
		if !ok {
			return
		}
		if r.name == "" {
			if nameField(v) == nil {
				d.errorf(v, "%s: name is required", what)
			}
			return
		}
		if j, dup := p.roleIdx[r.name]; dup {
			d.errorf(v, "role %q is defined twice (first at line %d)", r.name, p.roles[j].line)
			return
		}
		d.sequence(rulesNode, what+": rules", func(i int, v *yaml.Node) {
			if ru := d.rule(v, r.name, i); ru != nil {
				r.rules = append(r.rules, ru)
				p.rules = append(p.rules, ru)
			}
		})
		r.inheritNodes = inheritNodes
		p.roleIdx[r.name] = len(p.roles)
		p.roles = append(p.roles, r)
	})
}
