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
///      RULES. Per member, sequence numbers start at 1 and anchored ranges are
///      contiguous: a new anchor must start at `lastAnchored(member) + 1`
///      (`Gap` when later). A call starting inside the anchored prefix is
///      a silent no-op (no event, no state change) when it is an exact repeat
///      of one of the member's RECENT_ANCHORS (16) most recent anchors, i.e. the
///      same (firstSeq, lastSeq, root) triple; every other such call reverts
///      `Overlap`, including an exact repeat of an older anchor. Off-chain
///      submitters retry only their newest anchor, so the window is wide
///      enough for idempotent retries; an older repeat is settled from the
///      `Anchored` events (see ledger/anchoring.py).
///
///      RECORD. The `Anchored` event is the per-range record: a verifier checks
///      a range's root in the receipt of the anchor transaction (contract,
///      member, range, root, block depth). In addition, each member's state
///      carries a rolling SHA-256 accumulator over all its anchors, so that the
///      whole history is committed in state (which survives log pruning):
///          acc_0 = sha256(abi.encode(address(this), member))
///          acc_n = sha256(abi.encode(acc_{n-1}, uint256(firstSeq), uint256(lastSeq), root))
///      `historyOf(member)` returns (lastSeq, n, acc_n); anyone holding the
///      member's ordered ranges (from the events or from the node's database)
///      recomputes acc_n with a plain SHA-256 and compares.
///
///      STORAGE AND GAS. A new anchor must cost <= 50,000 gas for the whole
///      transaction, so it may not create a fresh slot (22,100 gas each). It
///      writes exactly three slots, all nonzero -> nonzero (2,100 cold access
///      + 2,900 each):
///        1. `_members[m]`: lastSeq, anchor count and a `registered` flag,
///           packed in one slot;
///        2. `_accumulators[m]`: acc_n;
///        3. `_recent[m][n % RECENT_ANCHORS]`: the ring entry of the new anchor,
///           `firstSeq << 192 | uint192(keccak256(firstSeq, lastSeq, root))`.
///      The slots are made nonzero once, when MEMBER_ROLE is first granted to
///      the member (`_grantRole` pre-initialises the ring with a nonzero filler
///      and writes acc_0): the admin pays the fresh slots at registration, so a
///      member's first anchor costs the same as any later one. Ring entries are
///      ordered by firstSeq, so the repeat check looks the newest entry up
///      first and then binary-searches the rest (at most 5 reads); a new anchor
///      never reads the ring.
contract AuditAnchor is AccessControl {
    /// @notice Role allowed to anchor roots (one member = one audit log).
    bytes32 public constant MEMBER_ROLE = keccak256("MEMBER_ROLE");

    /// @notice How many of a member's most recent anchors an exact repeat may
    ///         match to be a no-op (the ring size).
    uint256 public constant RECENT_ANCHORS = 16;

    /// @dev Filler of a ring slot not yet used by an anchor: any nonzero value
    ///      keeps later writes at the nonzero -> nonzero price. Never compared
    ///      (only the `anchors` newest slots are searched) and never a real
    ///      entry (those carry firstSeq >= 1 in their top 64 bits).
    uint256 private constant _UNUSED = 1;

    /// @dev A member's counters, packed in one slot (8 + 8 + 1 bytes).
    struct Member {
        uint64 lastSeq; // last anchored sequence number (0 = nothing anchored yet)
        uint64 anchors; // number of anchors so far; the next ring position is anchors % RECENT_ANCHORS
        bool registered; // slots pre-initialised; keeps this slot nonzero before the first anchor
    }

    /// @dev member => packed counters.
    mapping(address member => Member) private _members;

    /// @dev member => rolling accumulator acc_n over all its anchors.
    mapping(address member => bytes32 accumulator) private _accumulators;

    /// @dev member => ring of its RECENT_ANCHORS most recent anchor entries.
    mapping(address member => uint256[RECENT_ANCHORS] ring) private _recent;

    /// @notice Emitted once for every newly anchored range (never for a
    ///         no-op repeat). This is the range's record for verifiers.
    event Anchored(address indexed member, uint64 indexed firstSeq, uint64 lastSeq, bytes32 root);

    /// @notice A member's storage was initialised (first grant of MEMBER_ROLE).
    event MemberRegistered(address indexed member, bytes32 genesisAccumulator);

    /// @notice The root is zero (never a valid commitment).
    error EmptyRoot();
    /// @notice `lastSeq < firstSeq`.
    error InvalidRange(uint64 firstSeq, uint64 lastSeq);
    /// @notice `firstSeq` is beyond the next expected sequence number.
    error Gap(uint64 expectedFirst, uint64 firstSeq);
    /// @notice `firstSeq` starts inside the already anchored prefix and the
    ///         call is not an exact repeat of one of the RECENT_ANCHORS most
    ///         recent anchors. `expectedFirst` is 0 only when the member has
    ///         anchored up to type(uint64).max (log full).
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
    /// @dev Checks run cheapest first (calldata-only checks before any SLOAD).
    ///      A new anchor reads and writes the three slots listed in the
    ///      contract's notes and emits one event; a start inside the anchored
    ///      prefix only reads (no-op or `Overlap`).
    /// @param firstSeq First sequence number covered; must equal
    ///        lastAnchored(msg.sender) + 1 for a new anchor.
    /// @param lastSeq Last sequence number covered (>= firstSeq).
    /// @param root Non-zero Merkle root over the covered audit entries.
    function anchor(uint64 firstSeq, uint64 lastSeq, bytes32 root) external onlyRole(MEMBER_ROLE) {
        if (root == bytes32(0)) revert EmptyRoot();
        if (lastSeq < firstSeq) revert InvalidRange(firstSeq, lastSeq);

        Member memory m = _members[msg.sender];
        if (firstSeq <= m.lastSeq) {
            if (_isRecent(msg.sender, m.anchors, _entry(firstSeq, lastSeq, root))) return;
            unchecked {
                // Wraps to 0 only when lastSeq == type(uint64).max (log full).
                revert Overlap(m.lastSeq + 1, firstSeq);
            }
        }
        unchecked {
            // m.lastSeq < firstSeq <= type(uint64).max, so + 1 cannot overflow.
            if (firstSeq != m.lastSeq + 1) revert Gap(m.lastSeq + 1, firstSeq);
        }
        _recent[msg.sender][m.anchors % RECENT_ANCHORS] = _entry(firstSeq, lastSeq, root);
        _accumulators[msg.sender] = sha256(abi.encode(_accumulators[msg.sender], firstSeq, lastSeq, root));
        unchecked {
            // Every anchor advances lastSeq by >= 1, so anchors <= lastSeq: no overflow.
            _members[msg.sender] = Member({lastSeq: lastSeq, anchors: m.anchors + 1, registered: true});
        }
        emit Anchored(msg.sender, firstSeq, lastSeq, root);
    }

    /// @notice Last sequence number anchored by `member` (0 when none).
    /// @dev The next anchor must start at the returned value + 1.
    function lastAnchored(address member) external view returns (uint64) {
        return _members[member].lastSeq;
    }

    /// @notice What the chain commits to for `member`: its last anchored
    ///         sequence number, how many anchors it made, and the rolling
    ///         accumulator acc_n over them (acc_0 once registered, 0 before).
    /// @dev See the contract's notes for the accumulator's formula.
    function historyOf(address member) external view returns (uint64 lastSeq, uint64 anchors, bytes32 accumulator) {
        Member memory m = _members[member];
        return (m.lastSeq, m.anchors, _accumulators[member]);
    }

    /// @notice Whether `anchor(firstSeq, lastSeq, root)` from `member` would be
    ///         a no-op now: the triple is one of its RECENT_ANCHORS most recent
    ///         anchors.
    function isRecent(address member, uint64 firstSeq, uint64 lastSeq, bytes32 root) external view returns (bool) {
        return _isRecent(member, _members[member].anchors, _entry(firstSeq, lastSeq, root));
    }

    /// @dev Registers a member's storage on its first MEMBER_ROLE grant, so
    ///      that the admin, not the member's first anchor, pays for the fresh
    ///      slots. A re-grant after a revocation keeps the history.
    function _grantRole(bytes32 role, address account) internal override returns (bool granted) {
        granted = super._grantRole(role, account);
        if (role == MEMBER_ROLE && !_members[account].registered) _register(account);
    }

    /// @dev Makes the member's three slot kinds nonzero: ring filler, acc_0,
    ///      and the `registered` flag.
    function _register(address member) private {
        uint256[RECENT_ANCHORS] storage ring = _recent[member];
        for (uint256 i = 0; i < RECENT_ANCHORS; ++i) {
            ring[i] = _UNUSED;
        }
        bytes32 genesis = sha256(abi.encode(address(this), member));
        _accumulators[member] = genesis;
        _members[member].registered = true;
        emit MemberRegistered(member, genesis);
    }

    /// @dev True when `entry` is one of the member's min(anchors, RECENT_ANCHORS)
    ///      newest ring entries. Ring position i % RECENT_ANCHORS holds anchor
    ///      number i; firstSeq grows strictly with i, so after probing the newest
    ///      entry (the usual retry) the rest is binary-searched by firstSeq.
    function _isRecent(address member, uint64 anchors, uint256 entry) private view returns (bool) {
        if (anchors == 0) return false;
        uint256[RECENT_ANCHORS] storage ring = _recent[member];
        uint64 firstSeq = uint64(entry >> 192);
        uint256 lo = anchors > RECENT_ANCHORS ? anchors - RECENT_ANCHORS : 0; // oldest anchor in the ring
        uint256 hi = anchors; // exclusive
        uint256 probe = hi - 1; // newest first; lo <= probe < hi holds at each loop entry
        while (lo < hi) {
            uint256 stored = ring[probe % RECENT_ANCHORS];
            if (stored == entry) return true;
            uint64 start = uint64(stored >> 192);
            if (start == firstSeq) return false; // same start, other range or root
            if (start < firstSeq) lo = probe + 1;
            else hi = probe;
            probe = (lo + hi) >> 1;
        }
        return false;
    }

    /// @dev A ring entry: firstSeq in the top 64 bits (the search key) and 192
    ///      bits of keccak256 over the whole triple. Two different triples give
    ///      the same entry only with a 2^-192 chance, and a false match can only
    ///      turn a would-be `Overlap` revert into a no-op (no state change).
    function _entry(uint64 firstSeq, uint64 lastSeq, bytes32 root) private pure returns (uint256) {
        return (uint256(firstSeq) << 192) | uint192(uint256(keccak256(abi.encode(firstSeq, lastSeq, root))));
    }
}
