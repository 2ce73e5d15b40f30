// notecheck opens a C2SP signed note (a detpack store checkpoint) with Go's
// golang.org/x/mod/sumdb/note: the log's signature with a note verifier key,
// witnesses' tlog-cosignature/v1 signatures with a Verifier for algorithm 0x04.
//
//	notecheck NOTE LOG-VKEY [WITNESS-VKEY...]
//
// It prints one line per verified signature and the note's text, and exits 1
// when the note does not open (a bad signature, or none by a known key).
package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

type cosigner struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (c *cosigner) Name() string    { return c.name }
func (c *cosigner) KeyHash() uint32 { return c.hash }

// Verify checks a cosignature/v1: an 8-byte big-endian timestamp, then an
// Ed25519 signature over "cosignature/v1\ntime T\n" followed by the note text.
func (c *cosigner) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig[:8])
	signed := "cosignature/v1\ntime " + strconv.FormatUint(t, 10) + "\n" + string(msg)
	return ed25519.Verify(c.key, []byte(signed), sig[8:])
}

func cosignatureVerifier(vkey string) (note.Verifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("malformed witness vkey %q", vkey)
	}
	material, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(material) != 33 || material[0] != 0x04 {
		return nil, fmt.Errorf("not a cosignature/v1 vkey %q", vkey)
	}
	h := sha256.Sum256(append([]byte(parts[0]+"\n"), material...))
	hash := binary.BigEndian.Uint32(h[:4])
	if fmt.Sprintf("%08x", hash) != parts[1] {
		return nil, fmt.Errorf("key hash of %q does not match", vkey)
	}
	return &cosigner{parts[0], hash, ed25519.PublicKey(material[1:])}, nil
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: notecheck NOTE LOG-VKEY [WITNESS-VKEY...]")
		os.Exit(2)
	}
	msg, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	logVerifier, err := note.NewVerifier(strings.TrimSpace(os.Args[2]))
	if err != nil {
		fmt.Fprintln(os.Stderr, "log vkey:", err)
		os.Exit(2)
	}
	verifiers := []note.Verifier{logVerifier}
	for _, w := range os.Args[3:] {
		v, err := cosignatureVerifier(strings.TrimSpace(w))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		verifiers = append(verifiers, v)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "note.Open:", err)
		os.Exit(1)
	}
	for _, s := range n.Sigs {
		fmt.Printf("verified %s %08x\n", s.Name, s.Hash)
	}
	for _, s := range n.UnverifiedSigs {
		fmt.Printf("unverified %s %08x\n", s.Name, s.Hash)
	}
	fmt.Print(n.Text)
}
