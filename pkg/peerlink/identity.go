// Package peerlink is the channel nodes move content over: HTTPS with mutual
// TLS on its own port (--peer-addr). Each side's certificate is derived from
// its libp2p identity exactly as libp2p's TLS security transport does it
// (go-libp2p p2p/security/tls: a self-signed certificate whose extension
// carries the libp2p public key and its signature over the certificate key),
// so a TLS handshake proves a peer ID.
//
//   - The server (Server) serves only peers whose proven ID is a member:
//     connected over the cluster's PSK-gated libp2p host (Members).
//   - The client (Client) hands out one round tripper per expected peer ID,
//     whose connections are pooled for that ID alone and whose handshake fails
//     unless the provider proves the ID the DHT named.
//
// Why TLS and not HTTP over libp2p streams: measured, see
// BenchmarkChannels and docs/security.md. AES-GCM with AES-NI costs a fraction
// of the userspace ChaCha20 (Noise) plus XSalsa20 (pnet) plus yamux framing.
package peerlink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
)

// alpn is the protocol spoken over the TLS connection: HTTP/1.1 (net/http
// closes a connection that negotiated anything else it has no handler for).
// Not "h2": a blob streams faster without HTTP/2's framing and flow control,
// and each pooled connection then carries one request at a time.
const alpn = "http/1.1"

// Identity is this node's TLS identity, derived from its libp2p key.
type Identity struct {
	id   peer.ID
	base *tls.Config // certificate and TLS 1.3 settings; never used unspecialized
}

// NewIdentity derives the TLS identity of key. The certificate key is a fresh
// ECDSA P-256 key each start, signed by key; peers check that signature, not
// a CA.
func NewIdentity(key crypto.PrivKey) (*Identity, error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("peerlink: %w", err)
	}
	li, err := libp2ptls.NewIdentity(key)
	if err != nil {
		return nil, fmt.Errorf("peerlink: %w", err)
	}
	// ConfigForPeer is libp2p's way to get at the identity's config; its
	// verifier is replaced by ours in every specialized copy.
	base, _ := li.ConfigForPeer("")
	base.NextProtos = []string{alpn}
	base.VerifyPeerCertificate = func([][]byte, [][]*x509.Certificate) error {
		return errors.New("peerlink: config not specialized")
	}
	return &Identity{id: id, base: base}, nil
}

// ID is the peer ID this identity proves.
func (i *Identity) ID() peer.ID { return i.id }

// config returns a copy of the identity's TLS config whose certificate check
// derives the remote's peer ID and hands it to check.
func (i *Identity) config(check func(peer.ID) error) *tls.Config {
	c := i.base.Clone()
	c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		id, err := PeerIDFromCerts(raw)
		if err != nil {
			return err
		}
		return check(id)
	}
	return c
}

// PeerIDFromCerts verifies a libp2p TLS certificate chain (one self-signed
// certificate carrying a signed libp2p public key) and returns its peer ID.
func PeerIDFromCerts(raw [][]byte) (peer.ID, error) {
	chain := make([]*x509.Certificate, len(raw))
	for i, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return "", fmt.Errorf("peerlink: certificate: %w", err)
		}
		chain[i] = c
	}
	pub, err := libp2ptls.PubKeyFromCertChain(chain)
	if err != nil {
		return "", fmt.Errorf("peerlink: certificate: %w", err)
	}
	return peer.IDFromPublicKey(pub)
}

// ErrNotMember is a peer that proved an identity which is not a member.
var ErrNotMember = errors.New("peerlink: peer is not a member of the cluster")

// ErrWrongPeer is a provider that proved another identity than expected.
var ErrWrongPeer = errors.New("peerlink: provider is not the expected peer")
