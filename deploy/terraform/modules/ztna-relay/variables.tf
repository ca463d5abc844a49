variable "name" {
  description = "Name prefix of every resource (and the Name tag)."
  type        = string
  default     = "ztna-relay"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 characters of lower-case letters, digits and '-', starting with a letter."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the relay's VPC."
  type        = string
  default     = "10.40.0.0/16"
  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 24
    error_message = "vpc_cidr must be an IPv4 CIDR block of /24 or larger."
  }
}

variable "subnet_cidr" {
  description = "CIDR block of the public subnet (inside vpc_cidr)."
  type        = string
  default     = "10.40.1.0/24"
  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be an IPv4 CIDR block."
  }
}

variable "availability_zone" {
  description = "Availability zone of the subnet; empty picks the region's first."
  type        = string
  default     = ""
}

variable "instance_type" {
  description = "EC2 instance type (x86_64: the release binary is built for x86_64 Linux)."
  type        = string
  default     = "c6i.large"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]*[0-9][a-z]*\\.[a-z0-9]+$", var.instance_type)) && !can(regex("^[a-z0-9]+g[a-z]*\\.", var.instance_type))
    error_message = "instance_type must be an x86_64 instance type (no Graviton 'g' families)."
  }
}

variable "quic_port" {
  description = "UDP port of the relay's QUIC listener."
  type        = number
  default     = 4433
  validation {
    condition     = var.quic_port >= 1 && var.quic_port <= 65535 && floor(var.quic_port) == var.quic_port
    error_message = "quic_port must be an integer between 1 and 65535."
  }
}

variable "quic_ingress_cidrs" {
  description = "Where peers (connectors and agents) may reach the QUIC port from."
  type        = list(string)
  default     = ["0.0.0.0/0"]
  validation {
    condition     = length(var.quic_ingress_cidrs) > 0 && alltrue([for c in var.quic_ingress_cidrs : can(cidrhost(c, 0))])
    error_message = "quic_ingress_cidrs must be a non-empty list of IPv4 CIDR blocks."
  }
}

variable "metrics_port" {
  description = "TCP port of the relay's metrics and health listener (/metrics, /readyz)."
  type        = number
  default     = 9090
  validation {
    condition     = var.metrics_port >= 1 && var.metrics_port <= 65535 && var.metrics_port != 4433
    error_message = "metrics_port must be a port between 1 and 65535 other than the QUIC port."
  }
}

variable "metrics_cidrs" {
  description = "Where Prometheus scrapes from. Never the whole internet: metrics reveal topology."
  type        = list(string)
  validation {
    condition = length(var.metrics_cidrs) > 0 && alltrue([
      for c in var.metrics_cidrs : can(cidrhost(c, 0)) && tonumber(split("/", c)[1]) >= 8
    ])
    error_message = "metrics_cidrs must be IPv4 CIDR blocks of /8 or narrower; 0.0.0.0/0 is refused."
  }
}

variable "release_repository" {
  description = "GitHub repository (owner/name) whose releases carry the ztna-relay binary."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$", var.release_repository))
    error_message = "release_repository must look like owner/name."
  }
}

variable "release_version" {
  description = "Release to install (tag without the leading v), pinned."
  type        = string
  default     = "0.1.0"
  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.release_version))
    error_message = "release_version must be a semantic version such as 0.1.0."
  }
}

variable "release_sha256" {
  description = "SHA-256 of ztna-relay-x86_64-unknown-linux-gnu for release_version (from SHA256SUMS)."
  type        = string
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.release_sha256))
    error_message = "release_sha256 must be 64 lower-case hex digits."
  }
}

variable "tls_ssm_parameters" {
  description = "SSM SecureString parameter names holding the relay certificate, its key and the CA (PEM)."
  type = object({
    cert = string
    key  = string
    ca   = string
  })
  default = {
    cert = "/ztna/relay/tls.crt"
    key  = "/ztna/relay/tls.key"
    ca   = "/ztna/relay/ca.crt"
  }
  validation {
    condition     = alltrue([for p in values(var.tls_ssm_parameters) : can(regex("^/[A-Za-z0-9_./-]+$", p))])
    error_message = "tls_ssm_parameters must be absolute SSM parameter names."
  }
}

variable "services" {
  description = "Relay policy: per service, the connector and agent identities (certificate CNs) allowed."
  type = map(object({
    connectors = list(string)
    agents     = list(string)
  }))
  default = {}
  validation {
    condition     = alltrue([for name, _ in var.services : can(regex("^[a-z0-9][a-z0-9._-]{0,62}$", name))])
    error_message = "service names must be lower-case letters, digits, '.', '_' or '-'."
  }
}

variable "log_level" {
  description = "Relay log level."
  type        = string
  default     = "info"
  validation {
    condition     = contains(["debug", "info", "warn", "error"], var.log_level)
    error_message = "log_level must be one of debug, info, warn, error."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
