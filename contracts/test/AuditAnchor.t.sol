// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test, Vm} from "forge-std/Test.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {AuditAnchor} from "../AuditAnchor.sol";

/// Helpers shared by the rule tests and the gas tests: an off-chain model of the
/// member's accumulator, and one-line anchor calls.
abstract contract AuditAnchorBase is Test {
    event Anchored(address indexed member, uint64 indexed firstSeq, uint64 lastSeq, bytes32 root);
    event MemberRegistered(address indexed member, bytes32 genesisAccumulator);

    AuditAnchor internal anchorC;
    address internal admin = makeAddr("admin");
    bytes32 internal memberRole;

    function _deploy() internal {
        anchorC = new AuditAnchor(admin);
        memberRole = anchorC.MEMBER_ROLE();
    }

    function _grant(address who) internal {
        vm.prank(admin);
        anchorC.grantRole(memberRole, who);
    }

    function _anchor(address who, uint64 first, uint64 last, bytes32 root) internal {
        vm.prank(who);
        anchorC.anchor(first, last, root);
    }

    /// acc_0, as documented in the contract (recomputed here, not read from it).
    function _genesis(address who) internal view returns (bytes32) {
        return sha256(abi.encode(address(anchorC), who));
    }

    /// acc_n from acc_{n-1}, as documented in the contract.
    function _next(bytes32 acc, uint64 first, uint64 last, bytes32 root) internal pure returns (bytes32) {
        return sha256(abi.encode(acc, uint256(first), uint256(last), root));
    }

    function _assertHistory(address who, uint64 expLast, uint64 expAnchors, bytes32 expAcc) internal view {
        (uint64 last, uint64 anchors, bytes32 acc) = anchorC.historyOf(who);
        assertEq(last, expLast, "historyOf.lastSeq");
        assertEq(anchors, expAnchors, "historyOf.anchors");
        assertEq(acc, expAcc, "historyOf.accumulator");
        assertEq(anchorC.lastAnchored(who), expLast, "lastAnchored");
    }

    /// Range i (0-based) of a deterministic chain of `seed`: 1..1e6 entries long.
    function _len(uint256 seed, uint256 i) internal pure returns (uint64) {
        return uint64(_bound(uint256(keccak256(abi.encode(seed, i))), 1, 1_000_000));
    }

    function _root(uint256 seed, uint256 i) internal pure returns (bytes32) {
        return keccak256(abi.encode(seed, i, "root"));
    }
}

contract AuditAnchorTest is AuditAnchorBase {
    address internal alice = makeAddr("alice");
    address internal bob = makeAddr("bob");
    address internal mallory = makeAddr("mallory");

    bytes32 internal constant R1 = keccak256("root-1");
    bytes32 internal constant R2 = keccak256("root-2");
    bytes32 internal constant R3 = keccak256("root-3");

    uint64 internal constant RECENT = 16;

    function setUp() public {
        _deploy();
        _grant(alice);
        _grant(bob);
    }

    // ------------------------------------------------------------------ helpers

    /// Anchors [1, n] for `who` as a single range and returns the next expected seq.
    function _prefill(address who, uint64 n, bytes32 root) internal returns (uint64) {
        if (n == 0) return 1;
        _anchor(who, 1, n, root);
        return n + 1;
    }

    /// Anchors `n` ranges of the chain `seed` for alice; returns the starts and
    /// the last seq (starts[n] = last + 1).
    function _chain(uint256 seed, uint256 n) internal returns (uint64[] memory starts) {
        starts = new uint64[](n + 1);
        starts[0] = 1;
        for (uint256 i = 0; i < n; i++) {
            uint64 last = starts[i] + _len(seed, i) - 1;
            _anchor(alice, starts[i], last, _root(seed, i));
            starts[i + 1] = last + 1;
        }
    }

    /// Expects the exact repeat to be a silent no-op: no event, no state change.
    function _assertNoOp(address who, uint64 first, uint64 last, bytes32 root) internal {
        assertTrue(anchorC.isRecent(who, first, last, root), "isRecent");
        (uint64 l0, uint64 n0, bytes32 a0) = anchorC.historyOf(who);
        vm.recordLogs();
        _anchor(who, first, last, root);
        assertEq(vm.getRecordedLogs().length, 0, "no event on repeat");
        _assertHistory(who, l0, n0, a0);
    }

    // ------------------------------------------------------------- deployment

    function test_MemberRoleConstant() public view {
        assertEq(anchorC.MEMBER_ROLE(), keccak256("MEMBER_ROLE"));
        assertEq(anchorC.RECENT_ANCHORS(), RECENT);
    }

    function test_ConstructorGrantsAdminOnly() public {
        assertTrue(anchorC.hasRole(anchorC.DEFAULT_ADMIN_ROLE(), admin));
        assertFalse(anchorC.hasRole(memberRole, admin));
        AuditAnchor fresh = new AuditAnchor(bob);
        assertTrue(fresh.hasRole(fresh.DEFAULT_ADMIN_ROLE(), bob));
        assertFalse(fresh.hasRole(fresh.DEFAULT_ADMIN_ROLE(), address(this)));
        (,, bytes32 acc) = fresh.historyOf(bob);
        assertEq(acc, bytes32(0), "an admin is not registered as a member");
    }

    function test_ViewsWhenNothingAnchored() public view {
        _assertHistory(alice, 0, 0, _genesis(alice));
        _assertHistory(mallory, 0, 0, bytes32(0)); // never granted: not registered
        assertFalse(anchorC.isRecent(alice, 1, 1, R1));
        assertFalse(anchorC.isRecent(alice, 0, 0, R1));
    }

    // ------------------------------------------------------------ registration

    function test_FirstGrantRegistersWithGenesisAccumulator() public {
        vm.expectEmit(true, false, false, true, address(anchorC));
        emit MemberRegistered(mallory, _genesis(mallory));
        _grant(mallory);
        _assertHistory(mallory, 0, 0, _genesis(mallory));
        assertTrue(_genesis(mallory) != _genesis(alice), "genesis is per member");
    }

    /// The pre-initialisation is what keeps anchors off fresh slots: every
    /// ring slot and the accumulator are nonzero before the first anchor.
    function test_RegistrationMakesEverySlotAnchorsWriteNonzero() public {
        vm.record();
        _grant(mallory);
        (, bytes32[] memory writes) = vm.accesses(address(anchorC));
        uint256 nonzero;
        for (uint256 i = 0; i < writes.length; i++) {
            if (vm.load(address(anchorC), writes[i]) != bytes32(0)) nonzero++;
        }
        // role slot + packed member slot + accumulator + RECENT ring slots
        assertGe(nonzero, 3 + RECENT, "slots written nonzero at registration");

        vm.record();
        _anchor(mallory, 1, 5, R1);
        (, writes) = vm.accesses(address(anchorC));
        assertEq(writes.length, 3, "a new anchor writes exactly three slots");
    }

    function test_RegrantDoesNotRegisterAgainAndOtherRolesNeverRegister() public {
        _anchor(alice, 1, 10, R1);
        bytes32 acc = _next(_genesis(alice), 1, 10, R1);
        vm.startPrank(admin);
        anchorC.revokeRole(memberRole, alice);
        vm.recordLogs();
        anchorC.grantRole(memberRole, alice);
        assertEq(vm.getRecordedLogs().length, 1, "only RoleGranted, no MemberRegistered");
        anchorC.grantRole(anchorC.DEFAULT_ADMIN_ROLE(), mallory);
        vm.stopPrank();
        _assertHistory(alice, 10, 1, acc);
        _assertHistory(mallory, 0, 0, bytes32(0));
    }

    // ---------------------------------------------------------------- happy path

    function test_FirstAnchorEmitsAndStores() public {
        vm.expectEmit(true, true, false, true, address(anchorC));
        emit Anchored(alice, 1, 10, R1);
        _anchor(alice, 1, 10, R1);
        _assertHistory(alice, 10, 1, _next(_genesis(alice), 1, 10, R1));
        assertTrue(anchorC.isRecent(alice, 1, 10, R1));
        // Interior sequence numbers are not anchor starts.
        assertFalse(anchorC.isRecent(alice, 5, 10, R1));
    }

    function test_SubsequentAnchorsAreContiguous() public {
        _anchor(alice, 1, 10, R1);
        vm.expectEmit(true, true, false, true, address(anchorC));
        emit Anchored(alice, 11, 11, R2);
        _anchor(alice, 11, 11, R2);
        _anchor(alice, 12, 40, R3);
        bytes32 acc = _next(_next(_next(_genesis(alice), 1, 10, R1), 11, 11, R2), 12, 40, R3);
        _assertHistory(alice, 40, 3, acc);
        assertTrue(anchorC.isRecent(alice, 1, 10, R1));
        assertTrue(anchorC.isRecent(alice, 11, 11, R2));
        assertTrue(anchorC.isRecent(alice, 12, 40, R3));
    }

    function test_MembersHaveIndependentSequences() public {
        _anchor(alice, 1, 10, R1);
        _anchor(bob, 1, 3, R2);
        _assertHistory(alice, 10, 1, _next(_genesis(alice), 1, 10, R1));
        _assertHistory(bob, 3, 1, _next(_genesis(bob), 1, 3, R2));
        assertFalse(anchorC.isRecent(bob, 1, 10, R1));
    }

    // ------------------------------------------------------------ rejections

    function test_RevertEmptyRoot() public {
        vm.expectRevert(AuditAnchor.EmptyRoot.selector);
        _anchor(alice, 1, 1, bytes32(0));
    }

    function test_RevertInvalidRange() public {
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.InvalidRange.selector, uint64(5), uint64(4)));
        _anchor(alice, 5, 4, R1);
    }

    function test_RevertGapOnFirstAnchor() public {
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Gap.selector, uint64(1), uint64(2)));
        _anchor(alice, 2, 5, R1);
    }

    function test_RevertGapAfterAnchor() public {
        _anchor(alice, 1, 10, R1);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Gap.selector, uint64(11), uint64(12)));
        _anchor(alice, 12, 20, R2);
    }

    function test_RevertOverlapZeroFirstSeq() public {
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, uint64(1), uint64(0)));
        _anchor(alice, 0, 5, R1);
    }

    function test_RevertOverlapInsideRange() public {
        _anchor(alice, 1, 10, R1);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, uint64(11), uint64(5)));
        _anchor(alice, 5, 15, R2);
    }

    // ------------------------------------------------------------ repeats

    function test_RepeatIsSilentNoOp() public {
        _anchor(alice, 1, 10, R1);
        _anchor(alice, 11, 20, R2);
        _assertNoOp(alice, 1, 10, R1);
        _assertNoOp(alice, 11, 20, R2);
        _assertHistory(alice, 20, 2, _next(_next(_genesis(alice), 1, 10, R1), 11, 20, R2));
    }

    function test_RepeatWithDifferentRootOverlaps() public {
        _anchor(alice, 1, 10, R1);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, uint64(11), uint64(1)));
        _anchor(alice, 1, 10, R2);
    }

    function test_RepeatWithDifferentLastSeqOverlaps() public {
        _anchor(alice, 1, 10, R1);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, uint64(11), uint64(1)));
        _anchor(alice, 1, 9, R1);
    }

    function test_RepeatOfOtherMembersAnchorIsNotNoOp() public {
        _anchor(alice, 1, 10, R1);
        // bob has nothing anchored: (1,10,R1) is a brand new anchor for him.
        _anchor(bob, 1, 10, R1);
        assertEq(anchorC.lastAnchored(bob), 10);
    }

    /// The window is exactly RECENT_ANCHORS wide: the oldest of the last 16 is
    /// still a no-op, the one before it reverts once a 17th anchor pushed it out.
    function test_RepeatWindowIsTheSixteenMostRecentAnchors() public {
        uint64[] memory s = _chain(7, RECENT);
        _assertNoOp(alice, s[0], s[1] - 1, _root(7, 0)); // all 16 still in the ring

        _anchor(alice, s[RECENT], s[RECENT] + 4, R1); // the 17th overwrites ring slot 0
        assertFalse(anchorC.isRecent(alice, s[0], s[1] - 1, _root(7, 0)));
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, s[RECENT] + 5, s[0]));
        _anchor(alice, s[0], s[1] - 1, _root(7, 0));
        _assertNoOp(alice, s[1], s[2] - 1, _root(7, 1)); // now the oldest in the window
        _assertNoOp(alice, s[RECENT], s[RECENT] + 4, R1); // the newest
    }

    function test_FullLogReportsOverlapWithZeroExpected() public {
        uint64 max = type(uint64).max;
        _anchor(alice, 1, max, R1);
        assertEq(anchorC.lastAnchored(alice), max);
        _assertNoOp(alice, 1, max, R1); // exact repeat still a no-op
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, uint64(0), max));
        _anchor(alice, max, max, R2);
    }

    // --------------------------------------------------------------- roles

    function test_NonMemberReverts() public {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, mallory, memberRole)
        );
        _anchor(mallory, 1, 1, R1);
    }

    function test_AdminIsNotImplicitlyMember() public {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, admin, memberRole)
        );
        _anchor(admin, 1, 1, R1);
    }

    function test_AdminGrantsAndRevokesMember() public {
        _grant(mallory);
        _anchor(mallory, 1, 2, R1);
        vm.prank(admin);
        anchorC.revokeRole(memberRole, mallory);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, mallory, memberRole)
        );
        _anchor(mallory, 3, 4, R2);
        // History survives revocation; a re-granted member continues its sequence.
        assertTrue(anchorC.isRecent(mallory, 1, 2, R1));
        _grant(mallory);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Gap.selector, uint64(3), uint64(5)));
        _anchor(mallory, 5, 6, R2);
        _anchor(mallory, 3, 4, R2);
        _assertHistory(mallory, 4, 2, _next(_next(_genesis(mallory), 1, 2, R1), 3, 4, R2));
    }

    function test_NonAdminCannotGrant() public {
        bytes32 adminRole = anchorC.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, adminRole)
        );
        vm.prank(alice);
        anchorC.grantRole(memberRole, mallory);
    }

    // ================================================================ fuzz
    // Each fuzz test runs 512 cases (forge.toml [fuzz], fixed seed).

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_ContiguousChainAccepted(uint64 seed, uint8 count) public {
        uint256 n = bound(count, 1, 12);
        uint64 next = 1;
        bytes32 acc = _genesis(alice);
        for (uint256 i = 0; i < n; i++) {
            uint64 last = next + _len(seed, i) - 1;
            bytes32 root = _root(seed, i);
            vm.expectEmit(true, true, false, true, address(anchorC));
            emit Anchored(alice, next, last, root);
            _anchor(alice, next, last, root);
            acc = _next(acc, next, last, root);
            _assertHistory(alice, last, uint64(i + 1), acc);
            assertTrue(anchorC.isRecent(alice, next, last, root));
            next = last + 1;
        }
        _assertHistory(bob, 0, 0, _genesis(bob)); // other member untouched
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_GapReverts(uint64 prefix, uint64 firstSeq, uint64 lastSeq, bytes32 root) public {
        prefix = uint64(bound(prefix, 0, type(uint64).max - 2));
        uint64 expected = _prefill(alice, prefix, R1);
        firstSeq = uint64(bound(firstSeq, uint256(expected) + 1, type(uint64).max));
        lastSeq = uint64(bound(lastSeq, firstSeq, type(uint64).max));
        vm.assume(root != bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Gap.selector, expected, firstSeq));
        _anchor(alice, firstSeq, lastSeq, root);
        assertEq(anchorC.lastAnchored(alice), prefix);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_OverlapReverts(uint64 prefix, uint64 firstSeq, uint64 lastSeq, bytes32 root) public {
        prefix = uint64(bound(prefix, 1, type(uint64).max - 1));
        uint64 expected = _prefill(alice, prefix, R1);
        firstSeq = uint64(bound(firstSeq, 0, prefix));
        lastSeq = uint64(bound(lastSeq, firstSeq, type(uint64).max));
        vm.assume(root != bytes32(0));
        // Exclude the single exact repeat (covered by the no-op fuzz tests).
        vm.assume(!(firstSeq == 1 && lastSeq == prefix && root == R1));
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, expected, firstSeq));
        _anchor(alice, firstSeq, lastSeq, root);
        _assertHistory(alice, prefix, 1, _next(_genesis(alice), 1, prefix, R1));
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_ExactRepeatIsNoOp(uint64 len1, uint64 len2, bytes32 root1, bytes32 root2, bool repeatFirst)
        public
    {
        len1 = uint64(bound(len1, 1, 1e12));
        len2 = uint64(bound(len2, 1, 1e12));
        vm.assume(root1 != bytes32(0) && root2 != bytes32(0));
        _anchor(alice, 1, len1, root1);
        _anchor(alice, len1 + 1, len1 + len2, root2);

        (uint64 f, uint64 l, bytes32 r) = repeatFirst ? (1, len1, root1) : (len1 + 1, len1 + len2, root2);
        _assertNoOp(alice, f, l, r);
        _assertHistory(alice, len1 + len2, 2, _next(_next(_genesis(alice), 1, len1, root1), len1 + 1, len1 + len2, root2));
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_RepeatWithDifferentDataOverlaps(uint64 len, uint64 otherLast, bytes32 root, bytes32 otherRoot)
        public
    {
        len = uint64(bound(len, 1, type(uint64).max - 1));
        vm.assume(root != bytes32(0) && otherRoot != bytes32(0));
        otherLast = uint64(bound(otherLast, 1, type(uint64).max));
        vm.assume(otherLast != len || otherRoot != root);
        _anchor(alice, 1, len, root);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, len + 1, uint64(1)));
        _anchor(alice, 1, otherLast, otherRoot);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_InvalidRangeReverts(uint64 firstSeq, uint64 lastSeq, bytes32 root, uint64 prefix) public {
        vm.assume(root != bytes32(0));
        firstSeq = uint64(bound(firstSeq, 1, type(uint64).max));
        lastSeq = uint64(bound(lastSeq, 0, firstSeq - 1));
        prefix = uint64(bound(prefix, 0, 1000));
        _prefill(alice, prefix, R1);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.InvalidRange.selector, firstSeq, lastSeq));
        _anchor(alice, firstSeq, lastSeq, root);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_EmptyRootReverts(uint64 firstSeq, uint64 lastSeq, uint64 prefix) public {
        prefix = uint64(bound(prefix, 0, 1000));
        _prefill(alice, prefix, R1);
        vm.expectRevert(AuditAnchor.EmptyRoot.selector);
        _anchor(alice, firstSeq, lastSeq, bytes32(0));
        assertEq(anchorC.lastAnchored(alice), prefix);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_NonMemberReverts(address caller, uint64 firstSeq, uint64 lastSeq, bytes32 root) public {
        vm.assume(!anchorC.hasRole(memberRole, caller));
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, memberRole)
        );
        _anchor(caller, firstSeq, lastSeq, root);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_AdminGrantRevokeMember(address member, uint64 len, bytes32 root) public {
        vm.assume(member != alice && member != bob && member != address(0));
        len = uint64(bound(len, 1, type(uint64).max - 1));
        vm.assume(root != bytes32(0));

        _grant(member);
        assertTrue(anchorC.hasRole(memberRole, member));
        _anchor(member, 1, len, root);
        _assertHistory(member, len, 1, _next(_genesis(member), 1, len, root));

        vm.prank(admin);
        anchorC.revokeRole(memberRole, member);
        assertFalse(anchorC.hasRole(memberRole, member));
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, member, memberRole)
        );
        _anchor(member, len + 1, len + 1, root);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_NonAdminCannotGrantOrRevoke(address caller, address target) public {
        vm.assume(caller != admin);
        bytes32 adminRole = anchorC.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, adminRole)
        );
        vm.prank(caller);
        anchorC.grantRole(memberRole, target);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, adminRole)
        );
        vm.prank(caller);
        anchorC.revokeRole(memberRole, alice);
    }

    // ------------------------------------------------------- the ring's no-op rule

    /// After n anchors, an exact repeat of anchor j is a no-op iff j is among
    /// the 16 newest; otherwise it reverts Overlap, and either way nothing changes.
    /// forge-config: default.fuzz.runs = 512
    function testFuzz_RepeatIsNoOpExactlyInsideTheWindow(uint256 seed, uint8 count, uint8 pick) public {
        uint256 n = bound(count, 1, 40);
        uint256 j = bound(pick, 0, n - 1);
        uint64[] memory s = _chain(seed, n);
        (uint64 f, uint64 l, bytes32 r) = (s[j], s[j + 1] - 1, _root(seed, j));
        if (j + RECENT >= n) {
            _assertNoOp(alice, f, l, r);
        } else {
            assertFalse(anchorC.isRecent(alice, f, l, r));
            (uint64 l0, uint64 n0, bytes32 a0) = anchorC.historyOf(alice);
            vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, s[n], f));
            _anchor(alice, f, l, r);
            _assertHistory(alice, l0, n0, a0);
        }
        assertEq(anchorC.lastAnchored(alice), s[n] - 1);
    }

    /// A near miss of an anchor in the window (same start, other end or root;
    /// or a start that is no anchor's start) reverts Overlap.
    /// forge-config: default.fuzz.runs = 512
    function testFuzz_NearMissOfARecentAnchorOverlaps(uint256 seed, uint8 count, uint8 pick, uint64 last, bytes32 root)
        public
    {
        uint256 n = bound(count, 1, 40);
        uint256 j = bound(pick, n > RECENT ? n - RECENT : 0, n - 1);
        uint64[] memory s = _chain(seed, n);
        vm.assume(root != bytes32(0));
        last = uint64(bound(last, s[j], type(uint64).max));
        vm.assume(last != s[j + 1] - 1 || root != _root(seed, j));
        assertFalse(anchorC.isRecent(alice, s[j], last, root));
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, s[n], s[j]));
        _anchor(alice, s[j], last, root);

        if (s[j + 1] - s[j] > 1) {
            uint64 inside = uint64(bound(uint256(root), s[j] + 1, s[j + 1] - 1)); // no anchor starts there
            vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, s[n], inside));
            _anchor(alice, inside, s[j + 1] - 1, _root(seed, j));
        }
    }

    /// The accumulator equals the documented SHA-256 chain over every anchor,
    /// also across ring wrap-around and interleaved members and no-ops.
    /// forge-config: default.fuzz.runs = 512
    function testFuzz_AccumulatorCommitsToTheWholeHistory(uint256 seed, uint8 count) public {
        uint256 n = bound(count, 1, 40);
        bytes32 acc = _genesis(alice);
        uint64 next = 1;
        for (uint256 i = 0; i < n; i++) {
            uint64 last = next + _len(seed, i) - 1;
            _anchor(alice, next, last, _root(seed, i));
            _anchor(alice, next, last, _root(seed, i)); // retry: no-op
            _anchor(bob, uint64(i + 1), uint64(i + 1), R1);
            acc = _next(acc, next, last, _root(seed, i));
            next = last + 1;
        }
        _assertHistory(alice, next - 1, uint64(n), acc);
    }
}

/// Whole-transaction gas of `anchor` against the issue's budget (<= 50,000).
/// Every measured call is the first touch of its slots in its test (setUp is
/// its own transaction), as on chain: cold slots, nonzero -> nonzero writes.
contract AuditAnchorGasTest is AuditAnchorBase {
    uint256 internal constant BUDGET = 50_000;
    uint256 internal constant INTRINSIC = 21_000;

    address internal fresh = makeAddr("fresh"); // registered, never anchored
    address[3] internal steady = [makeAddr("steady-1"), makeAddr("steady-2"), makeAddr("steady-3")];

    function setUp() public {
        _deploy();
        _grant(fresh);
        for (uint256 m = 0; m < steady.length; m++) {
            _grant(steady[m]);
            // 20 anchors: the ring has wrapped, every slot holds a real entry.
            for (uint64 i = 1; i <= 20; i++) {
                _anchor(steady[m], i, i, keccak256(abi.encode(m, i)));
            }
        }
    }

    /// EIP-2028 calldata price (the EIP-7623 floor is far below these totals).
    function _calldataGas(bytes memory data) internal pure returns (uint256 gas) {
        for (uint256 i = 0; i < data.length; i++) {
            gas += data[i] == 0 ? 4 : 16;
        }
    }

    function _txGas(address who, uint64 first, uint64 last, bytes32 root) internal returns (uint256) {
        vm.prank(who);
        anchorC.anchor(first, last, root);
        Vm.Gas memory g = vm.lastCallGas();
        return INTRINSIC + _calldataGas(abi.encodeCall(AuditAnchor.anchor, (first, last, root))) + g.gasTotalUsed;
    }

    function test_GasFirstAnchorOfAMemberWithinBudget() public {
        uint256 gas = _txGas(fresh, 1, 1000, keccak256("first"));
        emit log_named_uint("tx gas: first anchor", gas);
        assertLe(gas, BUDGET);
    }

    function test_GasSteadyAnchorWithinBudgetAtBatchSizes() public {
        uint64[3] memory sizes = [uint64(1), 1_000, 1_000_000];
        for (uint256 m = 0; m < steady.length; m++) {
            uint256 gas = _txGas(steady[m], 21, 20 + sizes[m], keccak256(abi.encode("batch", m)));
            emit log_named_uint("tx gas: steady anchor, batch size", sizes[m]);
            emit log_named_uint("  gas", gas);
            assertLe(gas, BUDGET);
        }
    }

    function test_GasRepeatPaths() public {
        uint256 newest = _txGas(steady[0], 20, 20, keccak256(abi.encode(uint256(0), uint64(20))));
        emit log_named_uint("tx gas: no-op repeat of the newest anchor", newest);
        uint256 oldest = _txGas(steady[1], 5, 5, keccak256(abi.encode(uint256(1), uint64(5))));
        emit log_named_uint("tx gas: no-op repeat of the oldest anchor in the window", oldest);
        assertLe(newest, oldest);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, uint64(21), uint64(4)));
        vm.prank(steady[2]);
        anchorC.anchor(4, 4, keccak256(abi.encode(uint256(2), uint64(4))));
    }
}
