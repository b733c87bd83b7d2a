package masking_test

import (
	"fmt"

	"github.com/interlockhq/interlock/engine/masking"
	"github.com/interlockhq/interlock/engine/policy"
)

// A relay builds one Masker per decision, resolves a plan per
// RowDescription and masks each DataRow value with it.
func Example() {
	spec := &policy.MaskSpec{} // normally decision.Mask()
	spec.Detectors[policy.DetectorEmail] = policy.MaskerPartial
	spec.Detectors[policy.DetectorCard] = policy.MaskerRedact
	m, err := masking.New(masking.Config{Spec: spec, Key: []byte("a secret of 16+ bytes")})
	if err != nil {
		panic(err)
	}

	// RowDescription: id int4, note text, doc jsonb (binary format).
	plans := m.Plan([]masking.Column{
		{Name: "public.orders.id", TypeOID: 23},
		{Name: "public.orders.note", TypeOID: masking.OIDText},
		{Name: "public.orders.doc", TypeOID: masking.OIDJSONB, Binary: true},
	})
	row := [][]byte{[]byte("42"), []byte("paid by alice@example.com with 4111 1111 1111 1111"), []byte("\x01{\"to\": \"bob@example.org\"}")}
	var total masking.Counts
	for i, v := range row {
		out, null, n := m.MaskValue(nil, &plans[i], v)
		total.Add(&n)
		fmt.Printf("%q %v\n", out, null)
	}
	for d, n := range total.Detectors {
		if n > 0 {
			fmt.Printf("interlock_masked_values_total{detector=%q} += %d\n", policy.Detector(d), n)
		}
	}
	// Output:
	// "42" false
	// "paid by ****@example.com with [REDACTED:card]" false
	// "\x01{\"to\": \"****@example.org\"}" false
	// interlock_masked_values_total{detector="email"} += 2
	// interlock_masked_values_total{detector="card"} += 1
}

func ExampleMasker_MaskCopyLine() {
	spec := &policy.MaskSpec{}
	spec.Detectors[policy.DetectorEmail] = policy.MaskerRedact
	m, _ := masking.New(masking.Config{Spec: spec})
	plans := m.Plan([]masking.Column{{Name: "id", TypeOID: 23}, {Name: "note", TypeOID: masking.OIDText}})

	csv := masking.CSVCopy()
	out, _, err := m.MaskCopyLine(nil, &csv, plans, []byte("7,\"write to a@b.co, or call\"\n"))
	fmt.Printf("%q %v\n", out, err)

	text := masking.TextCopy()
	out, _, err = m.MaskCopyLine(nil, &text, plans, []byte("7\tline one\\na@b.co\n"))
	fmt.Printf("%q %v\n", out, err)
	// Output:
	// "7,\"write to [REDACTED:email], or call\"\n" <nil>
	// "7\tline one\\n[REDACTED:email]\n" <nil>
}

func ExampleMasker_MaskErrorField() {
	spec := &policy.MaskSpec{}
	spec.Detectors[policy.DetectorEmail] = policy.MaskerRedact
	m, _ := masking.New(masking.Config{Spec: spec})
	out, _ := m.MaskErrorField(nil, 'D', []byte("Key (email)=(alice@example.com) already exists."), "public.customers")
	fmt.Println(string(out))
	// Output:
	// Key (email)=([REDACTED:email]) already exists.
}
