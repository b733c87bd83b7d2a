package policy

// Names a rule's `actions` list accepts besides single action names and
// class names.
const (
	// AliasDangerous names what no agent should do without a human: actions
	// that destroy data wholesale, change privileges or identity, reach the
	// server's file system or shell, or run code the classifier cannot see
	// into, plus calls of every categorised function.
	//
	// ALTER is deliberately not in it: migrations ALTER routinely, and since
	// a block can never be overridden by an allow, putting it here would
	// make `dangerous` unusable in a global block. List `alter` (or `ddl`)
	// explicitly where it should be blocked.
	AliasDangerous = "dangerous"
	// AliasAll is every action, and calls of every function.
	AliasAll = "all"
)

var dangerousActions = []Action{
	ActionDrop, ActionTruncate,
	ActionGrant, ActionRevoke, ActionCreateRole, ActionAlterRole, ActionDropRole,
	ActionSetRole, ActionSetSessionAuthorization,
	ActionCopyToFile, ActionCopyFromFile, ActionCopyToProgram, ActionCopyFromProgram,
	ActionDo,
}

// allCategories is every FunctionCategory except CategoryNone.
const allCategories categorySet = (1<<categoryCount - 1) &^ 1

// expandAction resolves one entry of a rule's actions list. Lookup order:
// aliases, class names, action names, function category names. The class
// name "admin" means calls of functions of any category (the contract's
// "admin functions"); to name only the category admin, use
// function_categories.
func expandAction(name string) (ActionBits, categorySet, bool) {
	var set ActionBits
	switch name {
	case AliasDangerous:
		for _, a := range dangerousActions {
			set.Add(a)
		}
		return set, allCategories, true
	case AliasAll:
		for a := Action(1); a < actionCount; a++ {
			set.Add(a)
		}
		return set, allCategories, true
	case ClassAdmin.String():
		return set, allCategories, true
	}
	for c := ClassRead; c <= ClassHTTP; c++ {
		if c.String() == name {
			for a := Action(1); a < actionCount; a++ {
				if a.Class() == c {
					set.Add(a)
				}
			}
			return set, 0, true
		}
	}
	if a, ok := ParseAction(name); ok {
		set.Add(a)
		return set, 0, true
	}
	if c, ok := ParseCategory(name); ok {
		var cats categorySet
		cats.add(c)
		return set, cats, true
	}
	return set, 0, false
}

// actionNames lists every name expandAction accepts, for typo suggestions.
func actionNames() []string {
	names := []string{AliasDangerous, AliasAll}
	for c := ClassRead; c <= ClassHTTP; c++ {
		names = append(names, c.String())
	}
	for a := Action(1); a < actionCount; a++ {
		names = append(names, a.String())
	}
	for c := FunctionCategory(1); c < categoryCount; c++ {
		names = append(names, c.String())
	}
	return names
}
