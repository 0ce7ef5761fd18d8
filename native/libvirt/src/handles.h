// Owning guards for libvirt objects. Every libvirt *Free function starts by
// resetting the calling thread's last error, so an object freed between a
// failing call and the read of its error wipes libvirt's message. Operations
// therefore read the error first (ThrowLast, LastFailure) and leave every
// free to these destructors, which run only once the error is in hand.
#pragma once

#include <libvirt/libvirt.h>

#include <cstdlib>
#include <utility>

namespace vg {

template <typename T, int (*FreeFn)(T)>
class Handle {
 public:
  Handle() = default;
  explicit Handle(T ptr) : ptr_(ptr) {}
  ~Handle() {
    if (ptr_ != nullptr) FreeFn(ptr_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
  Handle& operator=(Handle&& other) noexcept {
    std::swap(ptr_, other.ptr_);
    return *this;
  }

  T get() const { return ptr_; }
  explicit operator bool() const { return ptr_ != nullptr; }

 private:
  T ptr_ = nullptr;
};

using DomainHandle = Handle<virDomainPtr, virDomainFree>;
using SnapshotHandle = Handle<virDomainSnapshotPtr, virDomainSnapshotFree>;
using NetworkHandle = Handle<virNetworkPtr, virNetworkFree>;
using PoolHandle = Handle<virStoragePoolPtr, virStoragePoolFree>;
using VolumeHandle = Handle<virStorageVolPtr, virStorageVolFree>;

// An array that a libvirt listing call allocates, with every object in it.
// `count` stays 0 until the listing succeeds, so a failed listing frees nothing.
template <typename T, int (*FreeFn)(T)>
struct HandleList {
  T* items = nullptr;
  int count = 0;
  HandleList() = default;
  HandleList(const HandleList&) = delete;
  HandleList& operator=(const HandleList&) = delete;
  ~HandleList() {
    for (int i = 0; i < count; i++) {
      if (items[i] != nullptr) FreeFn(items[i]);
    }
    free(items);
  }
};

using DomainList = HandleList<virDomainPtr, virDomainFree>;
using SnapshotList = HandleList<virDomainSnapshotPtr, virDomainSnapshotFree>;
using NetworkList = HandleList<virNetworkPtr, virNetworkFree>;
using PoolList = HandleList<virStoragePoolPtr, virStoragePoolFree>;
using VolumeList = HandleList<virStorageVolPtr, virStorageVolFree>;

// virConnectGetAllDomainStats' records (and the domain each one holds).
class StatsRecords {
 public:
  StatsRecords() = default;
  StatsRecords(const StatsRecords&) = delete;
  StatsRecords& operator=(const StatsRecords&) = delete;
  ~StatsRecords() {
    if (records_ != nullptr) virDomainStatsRecordListFree(records_);
  }
  virDomainStatsRecordPtr** out() { return &records_; }
  virDomainStatsRecordPtr operator[](int i) const { return records_[i]; }

 private:
  virDomainStatsRecordPtr* records_ = nullptr;
};

}  // namespace vg
