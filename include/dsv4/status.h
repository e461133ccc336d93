// Errors in dsv4: every entry point returns a Status; nothing exits or aborts.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace dsv4 {

// Values are part of the C ABI (dsv4.h mirrors them): never renumber.
enum class StatusCode : int32_t {
  kOk = 0,
  kInvalidArgument = 1,  // a caller error: dtype, shape, stride, alignment, range
  kUnsupported = 2,      // valid request this build or device cannot serve (no CUDA, not sm_90)
  kCudaError = 3,        // the CUDA runtime reported an error
  kInternal = 4,         // a dsv4 bug
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return {}; }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  explicit operator bool() const { return ok(); }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// For callers that prefer exceptions: dsv4::check(op(...)) throws dsv4::Error on failure.
class Error : public std::runtime_error {
 public:
  explicit Error(Status s) : std::runtime_error(s.message()), status_(std::move(s)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

inline void check(Status s) {
  if (!s.ok()) throw Error(std::move(s));
}

}  // namespace dsv4
