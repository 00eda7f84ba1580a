package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hookbus/hookbus/pkg/config"
)

// writeCertificate writes a self-signed certificate and its key as PEM
// files and returns their paths.
func writeCertificate(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hookbus test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile = filepath.Join(dir, "cert.pem")
	keyFile = filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestTLSConfigUnsetIsNil(t *testing.T) {
	cfg, err := config.Broker{AMQPURL: "amqps://h:5671/", Namespace: "x"}.TLSConfig()
	if err != nil || cfg != nil {
		t.Errorf("TLSConfig() = %v, %v; want nil, nil", cfg, err)
	}
}

func TestTLSConfigLoadsFiles(t *testing.T) {
	certFile, keyFile := writeCertificate(t)
	b := config.Broker{
		AMQPURL:           "amqps://h:5671/",
		Namespace:         "x",
		AMQPTLSCAFile:     certFile,
		AMQPTLSCertFile:   certFile,
		AMQPTLSKeyFile:    keyFile,
		AMQPTLSServerName: "rabbit.internal",
	}
	cfg, err := b.TLSConfig()
	if err != nil {
		t.Fatalf("TLSConfig: %v", err)
	}
	if cfg.RootCAs == nil {
		t.Error("RootCAs is nil, want the CA file's pool")
	}
	if len(cfg.Certificates) != 1 {
		t.Errorf("Certificates has %d entries, want 1", len(cfg.Certificates))
	}
	if cfg.ServerName != "rabbit.internal" {
		t.Errorf("ServerName = %q, want rabbit.internal", cfg.ServerName)
	}
	if err := b.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestTLSConfigErrorsNameVariables(t *testing.T) {
	certFile, _ := writeCertificate(t)
	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		broker config.Broker
		want   []string
	}{
		{"missing CA file", config.Broker{AMQPTLSCAFile: filepath.Join(t.TempDir(), "none.pem")}, []string{"HOOKBUS_AMQP_TLS_CA_FILE"}},
		{"CA file without PEM", config.Broker{AMQPTLSCAFile: notPEM}, []string{"HOOKBUS_AMQP_TLS_CA_FILE", "no PEM certificate"}},
		{"certificate without key", config.Broker{AMQPTLSCertFile: certFile}, []string{"HOOKBUS_AMQP_TLS_CERT_FILE and HOOKBUS_AMQP_TLS_KEY_FILE"}},
		{"key that does not match", config.Broker{AMQPTLSCertFile: certFile, AMQPTLSKeyFile: notPEM}, []string{"HOOKBUS_AMQP_TLS_CERT_FILE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.broker.TLSConfig()
			if err == nil {
				t.Fatal("TLSConfig() = nil error, want one")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestBrokerValidateURLList(t *testing.T) {
	ok := config.Broker{AMQPURL: "amqp://a:5672/,amqps://b:5671/", Namespace: "webhooks"}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate(two URLs) = %v, want nil", err)
	}
	bad := config.Broker{AMQPURL: "amqp://a:5672/,http://b/", Namespace: "webhooks"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "HOOKBUS_AMQP_URL") {
		t.Errorf("Validate(one bad URL) = %v, want an error naming HOOKBUS_AMQP_URL", err)
	}
}
