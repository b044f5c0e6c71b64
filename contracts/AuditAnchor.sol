// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title AuditAnchor
/// @notice Tamper-evidence anchor for Carrack audit logs. Each member (an
///         address holding MEMBER_ROLE) periodically commits the Merkle root of
///         a contiguous range of its own audit-log sequence numbers.
/// @dev PRIVACY: no personal data is ever written on chain. Only opaque 32-byte
///      roots (hashes computed off chain over audit entries) and sequence
///      numbers are stored and emitted; the audit entries themselves stay off
///      chain. Callers must never pass anything but such a root.
///
///      Per member, sequence numbers start at 1 and anchored ranges are
///      contiguous: a new anchor must start at `lastAnchored(member) + 1`.
///      Re-submitting an already anchored (firstSeq, lastSeq, root) triple is a
///      silent no-op so that off-chain submitters can retry idempotently.
///
///      Storage layout (gas): one slot per member for the last anchored
///      sequence number, and one record per anchor keyed by
///      (member, firstSeq). A record is a uint64 plus a bytes32, which cannot
///      share a single 256-bit slot, so a new anchor costs two fresh slots plus
///      one update of the member's counter -- the minimum for a design whose
///      `anchorOf` returns both values without off-chain help.
contract AuditAnchor is AccessControl {
    /// @notice Role allowed to anchor roots (one member = one audit log).
    bytes32 public constant MEMBER_ROLE = keccak256("MEMBER_ROLE");

    /// @dev One anchored range. `lastSeq` is stored next to `root` under the
    ///      same (member, firstSeq) key so that the repeat check and
    ///      `anchorOf` need a single mapping lookup (two adjacent slots).
    struct Anchor {
        uint64 lastSeq;
        bytes32 root;
    }

    /// @dev member => last anchored sequence number (0 = nothing anchored yet).
    mapping(address member => uint64 lastSeq) private _lastAnchored;

    /// @dev member => firstSeq => anchored range starting at firstSeq.
    mapping(address member => mapping(uint64 firstSeq => Anchor)) private _anchors;

    /// @notice Emitted once for every newly anchored range (never for a
    ///         no-op repeat).
    event Anchored(address indexed member, uint64 indexed firstSeq, uint64 lastSeq, bytes32 root);

    /// @notice The root is zero (never a valid commitment).
    error EmptyRoot();
    /// @notice `lastSeq < firstSeq`.
    error InvalidRange(uint64 firstSeq, uint64 lastSeq);
    /// @notice `firstSeq` is beyond the next expected sequence number.
    error Gap(uint64 expectedFirst, uint64 firstSeq);
    /// @notice `firstSeq` starts inside the already anchored prefix and is not
    ///         an exact repeat of an existing anchor. `expectedFirst` is 0 only
    ///         when the member has anchored up to type(uint64).max (log full).
    error Overlap(uint64 expectedFirst, uint64 firstSeq);

    /// @notice Deploys the anchor contract.
    /// @dev Only grants DEFAULT_ADMIN_ROLE; the admin then grants/revokes
    ///      MEMBER_ROLE with the standard AccessControl functions. No member is
    ///      created here so deployment stays cheap and explicit.
    /// @param admin Account receiving DEFAULT_ADMIN_ROLE.
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Anchors the root of the caller's audit entries firstSeq..lastSeq
    ///         (inclusive). Only a 32-byte root is recorded, never personal data.
    /// @dev Gas: the happy path reads one slot (the caller's counter), writes
    ///      the two-slot record and the counter, and emits one event. The
    ///      record is only read on the overlap path (to detect an exact repeat),
    ///      so new anchors never pay for it. Checks run cheapest first
    ///      (calldata-only checks before any SLOAD).
    /// @param firstSeq First sequence number covered; must equal
    ///        lastAnchored(msg.sender) + 1 for a new anchor.
    /// @param lastSeq Last sequence number covered (>= firstSeq).
    /// @param root Non-zero Merkle root over the covered audit entries.
    function anchor(uint64 firstSeq, uint64 lastSeq, bytes32 root) external onlyRole(MEMBER_ROLE) {
        if (root == bytes32(0)) revert EmptyRoot();
        if (lastSeq < firstSeq) revert InvalidRange(firstSeq, lastSeq);

        uint64 last = _lastAnchored[msg.sender];
        if (firstSeq > last) {
            // last < firstSeq <= type(uint64).max, so last + 1 cannot overflow.
            unchecked {
                if (firstSeq != last + 1) revert Gap(last + 1, firstSeq);
            }
            _anchors[msg.sender][firstSeq] = Anchor({lastSeq: lastSeq, root: root});
            _lastAnchored[msg.sender] = lastSeq;
            emit Anchored(msg.sender, firstSeq, lastSeq, root);
        } else {
            // firstSeq <= last: already anchored territory. Exact repeats are
            // idempotent no-ops; anything else overlaps existing anchors.
            Anchor storage existing = _anchors[msg.sender][firstSeq];
            if (existing.root == root && existing.lastSeq == lastSeq) return;
            unchecked {
                // Wraps to 0 only when last == type(uint64).max (log full).
                revert Overlap(last + 1, firstSeq);
            }
        }
    }

    /// @notice Last sequence number anchored by `member` (0 when none).
    /// @dev Single SLOAD of the member's counter; the next anchor must start
    ///      at the returned value + 1.
    function lastAnchored(address member) external view returns (uint64) {
        return _lastAnchored[member];
    }

    /// @notice The anchor of `member` starting at `firstSeq`, or (0, 0) when
    ///         no anchor starts exactly there.
    /// @dev Two adjacent SLOADs from one mapping lookup; lookup is keyed by the
    ///      range start, which is what off-chain verifiers know.
    function anchorOf(address member, uint64 firstSeq) external view returns (uint64 lastSeq, bytes32 root) {
        Anchor storage a = _anchors[member][firstSeq];
        return (a.lastSeq, a.root);
    }
}
