/**
 * Turns QUIC close errors into words: one-line descriptions for logs and bounded reason
 * labels for metrics.
 *
 * @module
 */
import type { CloseInfo, ConnectionError } from "./connection.ts";

// TLS alerts (RFC 8446 §6) a peer-authentication failure produces.
const TLS_ALERTS: Record<number, string> = {
  40: "handshake_failure",
  42: "bad_certificate",
  43: "unsupported_certificate",
  44: "certificate_revoked",
  45: "certificate_expired",
  46: "certificate_unknown",
  48: "unknown_ca",
  49: "access_denied",
  116: "certificate_required",
  120: "no_application_protocol",
};

/** The TLS alert name of a crypto error code (0x100 + alert), or null for other codes. */
export function tlsAlertName(error: ConnectionError): string | null {
  if (error.isApp || error.code < 0x100 || error.code >= 0x200) return null;
  return TLS_ALERTS[error.code - 0x100] ?? `tls_alert_${error.code - 0x100}`;
}

/** A bounded label for why a handshake failed (metrics). */
export function handshakeFailureReason(info: CloseInfo): string {
  if (info.timedOut) return "timeout";
  const error = info.local ?? info.peer;
  if (error === null) return "closed";
  return tlsAlertName(error) ?? (error.isApp ? "closed" : "transport_error");
}

/** A one-line explanation of a close, for logs. */
export function describeClose(info: CloseInfo, fallback: string): string {
  if (info.timedOut) return "idle timeout";
  const error = info.peer ?? info.local;
  if (error === null) return fallback;
  const side = info.peer ? "peer" : "local";
  const alert = tlsAlertName(error);
  if (alert !== null) return `${side} TLS alert ${alert}`;
  return `${side} closed: code ${error.code}${error.reason ? ` (${error.reason})` : ""}`;
}
