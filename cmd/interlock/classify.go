package main

import (
	"fmt"

	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/protocols/postgres"
)

// sqlOperations adapts the PostgreSQL classifier for the policy tools: one
// operation per statement, EXECUTE resolved against a PREPARE earlier in the
// same text (a session would remember it; the tools only see this text).
func sqlOperations(c *postgres.Classifier) func(string) ([]policy.Operation, error) {
	return func(sql string) ([]policy.Operation, error) {
		cl, err := c.Classify(sql)
		if err != nil {
			return nil, err
		}
		prepared := map[string]policy.Operation{}
		ops := make([]policy.Operation, 0, len(cl.Statements))
		for i := range cl.Statements {
			st := &cl.Statements[i]
			op := st.Op
			if st.Execute != "" {
				if p, ok := prepared[st.Execute]; ok {
					op = st.ResolveExecute(p)
				} else {
					op.Unclassified = true
					op.Reason = fmt.Sprintf("EXECUTE %s without a PREPARE %s earlier in the same SQL", st.Execute, st.Execute)
				}
			}
			if st.Prepare != "" {
				prepared[st.Prepare] = st.Op
			}
			op.Protocol = policy.ProtocolPostgres
			ops = append(ops, op)
		}
		return ops, nil
	}
}
