// Package masking rewrites sensitive values in database results before an
// agent sees them: column rules replace whole values, content detectors find
// e-mail addresses, card numbers, SSNs, IBANs, phone numbers, IP addresses,
// JWTs, AWS keys, API tokens and PEM private keys inside text, in one pass
// over each value.
//
// The package holds no wire code. A protocol relay builds one Masker from the
// policy's MaskSpec and the deployment's hash key, resolves a Plan for each
// result description (Masker.Plan, once per RowDescription), and then hands
// it every value (MaskValue), COPY row (MaskCopyLine), error or notice field
// (MaskErrorField) and notification payload (MaskPayload). Each call returns
// what it masked per detector (Counts) for the metrics and the recording;
// the unmasked values are never kept.
//
// Calls that find nothing return their input unchanged, without allocating,
// so unmasked traffic costs one scan. docs/masking.md describes what each
// detector matches exactly and where precision was preferred over recall.
//
// A Masker is immutable after New and safe for concurrent use. It needs no
// privileges and holds no global state. Its key must stay secret: hash tokens
// of low-entropy values (SSNs, phone numbers) can be reversed by anyone who
// can compute them.
package masking
